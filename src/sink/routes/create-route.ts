/** The route of a data center, by its routing (see route.ts). */
import { serversOf, type DatacenterConfig } from '../../config/schema.js';
import { KetamaRoute } from './ketama-route.js';
import { ReplicateRoute } from './replicate.js';
import type { Route } from './route.js';

export function createRoute(dc: DatacenterConfig): Route {
  switch (dc.routing) {
    case 'replicate':
      return new ReplicateRoute(serversOf(dc));
    case 'ketama':
      return new KetamaRoute(dc);
  }
}

/**
 * The shipped Grafana dashboard and alert rules name only metrics the processes export (a
 * renamed metric would leave a panel empty or an alert silent).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { repoRoot } from '../../scripts/stack.js';
import { registry } from '../../src/observability/metrics.js';

const exported = new Set(
  registry.getMetricsAsArray().flatMap((m) => {
    const name = m.name;
    return String(m.type) === 'histogram' ? [name, `${name}_bucket`, `${name}_sum`, `${name}_count`] : [name];
  }),
);

function metricsIn(text: string): string[] {
  return [...new Set([...text.matchAll(/\bmcrepl_[a-z_]+/g)].map((m) => m[0]))];
}

test('the Grafana dashboard queries exported metrics, in panels with a query each', () => {
  const dash = JSON.parse(fs.readFileSync(path.join(repoRoot, 'deploy', 'grafana', 'mcrepl-dashboard.json'), 'utf8')) as { panels: { title: string; targets: { expr: string }[] }[] };
  assert.ok(dash.panels.length >= 6);
  for (const p of dash.panels) {
    assert.ok(p.targets.length > 0, p.title);
    for (const t of p.targets) for (const m of metricsIn(t.expr)) assert.ok(exported.has(m), `${p.title}: ${m} is not exported`);
  }
});

test('the alert rules use exported metrics', () => {
  const rules = fs.readFileSync(path.join(repoRoot, 'deploy', 'prometheus', 'alerts.yml'), 'utf8');
  const used = metricsIn(rules);
  assert.ok(used.length >= 6);
  for (const m of used) assert.ok(exported.has(m), `${m} is not exported`);
});

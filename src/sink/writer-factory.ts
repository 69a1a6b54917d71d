/** Which MemcachedWriter a worker group uses (`memcached.writer`), and its factory. */
import { MemjsWriter, type WriterFactory } from './memcached-writer.js';
import { MetaWriter } from './meta-client.js';

export const memjsWriterFactory: WriterFactory = (address, opts) => new MemjsWriter(address, opts);
export const metaWriterFactory: WriterFactory = (address, opts) => new MetaWriter(address, opts);

export type WriterKind = 'auto' | 'meta' | 'memjs';

/** `auto`: meta, unless SASL credentials are set (memcached turns the text protocol off under SASL). */
export function resolveWriterKind(kind: WriterKind, username: string | undefined): 'meta' | 'memjs' {
  if (kind !== 'auto') return kind;
  return username !== undefined ? 'memjs' : 'meta';
}

export function writerFactoryFor(kind: WriterKind, username: string | undefined): WriterFactory {
  return resolveWriterKind(kind, username) === 'meta' ? metaWriterFactory : memjsWriterFactory;
}

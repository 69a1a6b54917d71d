/**
 * Which partition (queue) a key belongs to: FNV-1a 32 of the key bytes, modulo the partition
 * count. Every op on one key lands in one queue, consumed in order by one consumer, which is
 * what keeps per-key order. The hash is fixed forever: changing it would reorder queued ops.
 */
export function fnv1a32(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

export function partitionOf(key: Uint8Array, partitions: number): number {
  return fnv1a32(key) % partitions;
}

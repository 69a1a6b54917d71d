/** A promise that gives up after a while (the work itself goes on; its result is ignored). */
import { McreplError } from '../errors.js';

export function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new McreplError('TIMEOUT', message, { retriable: true })), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

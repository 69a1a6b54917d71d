/** The stack scripts' messages, on stderr. */
export const log = (msg: string) => process.stderr.write(`[stack] ${msg}\n`);

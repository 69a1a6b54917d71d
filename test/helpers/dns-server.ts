/**
 * A DNS server of the test's own (Debian's dnsmasq, the binary only), on a loopback port, that
 * answers A records from a hosts file the test rewrites: `setRecords` writes it and sends
 * SIGHUP, which makes dnsmasq read it again. Stopped by its PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Resolver } from 'node:dns/promises';
import { stopChild } from './child.js';
import { waitFor } from './wait-for.js';

export class Dnsmasq {
  private child: ChildProcess | undefined;
  private readonly hosts: string;

  constructor(
    readonly port: number,
    private readonly dir: string,
  ) {
    this.hosts = path.join(dir, `dnsmasq-${port}.hosts`);
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(name: string, addresses: string[]): Promise<void> {
    fs.mkdirSync(this.dir, { recursive: true });
    this.write(name, addresses);
    const args = ['-k', `--port=${this.port}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', `--addn-hosts=${this.hosts}`, '--local-ttl=0', '--log-facility=-'];
    if (process.getuid?.() === 0) args.push('--user=root');
    this.child = spawn('/usr/sbin/dnsmasq', args, { stdio: 'ignore' });
    await this.until(name, addresses);
  }

  /** Replaces the name's records; resolves once dnsmasq answers with them. */
  async setRecords(name: string, addresses: string[]): Promise<void> {
    this.write(name, addresses);
    this.child?.kill('SIGHUP');
    await this.until(name, addresses);
  }

  private write(name: string, addresses: string[]): void {
    fs.writeFileSync(this.hosts, addresses.map((a) => `${a} ${name}\n`).join(''));
  }

  private async until(name: string, addresses: string[]): Promise<void> {
    const r = new Resolver({ timeout: 500, tries: 1 });
    r.setServers([this.address]);
    const want = JSON.stringify([...addresses].sort());
    await waitFor(async () => JSON.stringify((await r.resolve4(name).catch(() => [])).sort()) === want, { timeoutMs: 10_000, message: `dnsmasq answering ${name} with ${want}` });
  }

  async stop(): Promise<void> {
    const c = this.child;
    this.child = undefined;
    await stopChild(c);
  }
}

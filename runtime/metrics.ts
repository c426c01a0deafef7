/**
 * Prometheus metrics every daemon serves with `--metrics HOST:PORT` (prom-client's text format at
 * `/metrics`). One set of names for the three programs, so one dashboard reads any of them:
 *
 * - `underpass_sessions`, `underpass_endpoints`, `underpass_publications_online`, `underpass_tunnels_open`:
 *   gauges read from the program's own state at scrape time (nothing to keep in step).
 * - `underpass_tunnel_opens_total{result}`: `ok`, or the refusal's code (`UP_ERR_OFFLINE`, …).
 * - `underpass_tunnel_open_seconds`: from the request to the spliced tunnel.
 * - `underpass_tunnel_bytes_total{direction}`: `upstream` (towards the service) and `downstream`
 *   (towards the app), counted per chunk as it is relayed, so a long transfer shows live.
 * - `underpass_resumes_total{what}`: sessions and tunnel legs that came back after a link cut.
 * - `underpass_refusals_total{cause}`: every refusal, by its code.
 * - `underpass_build_info{version,node,program}`: 1.
 *
 * Per-publication labels (`publication`) on opens and bytes only with `--metrics-per-publication`:
 * a label per publication multiplies the series a scrape carries by the number of publications.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import client from 'prom-client';
import { ConfigError } from '../protocol/errors';
import type { HostPort } from '../protocol/names';
import type { SpliceMeter } from './splice';

export type ProgramName = 'server' | 'proxy' | 'redirector';

/** Gauges a program answers at scrape time; a program leaves out what it does not have. */
export interface MetricsSnapshot {
  sessions?: number;
  endpoints?: number;
  publicationsOnline?: number;
  tunnelsOpen?: number;
}

export interface MetricsOptions {
  program: ProgramName;
  version: string;
  /** Label opens and bytes by publication. */
  perPublication: boolean;
  snapshot: () => MetricsSnapshot;
}

/** The publication label's value when per-publication labels are off. */
const ALL = '';

export class Metrics {
  readonly registry = new client.Registry();
  private readonly opens: client.Counter<'result' | 'publication'>;
  private readonly openSeconds: client.Histogram<'publication'>;
  private readonly bytes: client.Counter<'direction' | 'publication'>;
  private readonly resumes: client.Counter<'what'>;
  private readonly refusals: client.Counter<'cause'>;

  constructor(private readonly options: MetricsOptions) {
    const registers = [this.registry];
    const labels = (names: string[]): string[] => (options.perPublication ? [...names, 'publication'] : names);
    const gauge = (name: string, help: string, read: (s: MetricsSnapshot) => number | undefined): void => {
      new client.Gauge({
        name,
        help,
        registers,
        collect(this: client.Gauge) {
          const value = read(options.snapshot());
          if (value !== undefined) this.set(value);
        },
      });
    };
    gauge('underpass_sessions', 'Sessions to or from the tunnel server now up', (s) => s.sessions);
    gauge(
      'underpass_endpoints',
      'Endpoint sessions the server holds (connected or in their grace period)',
      (s) => s.endpoints,
    );
    gauge(
      'underpass_publications_online',
      'Publications whose service proxy is connected',
      (s) => s.publicationsOnline,
    );
    gauge('underpass_tunnels_open', 'Tunneled connections open now', (s) => s.tunnelsOpen);
    this.opens = new client.Counter({
      name: 'underpass_tunnel_opens_total',
      help: 'Tunnel openings by result: ok, or the refusal code',
      labelNames: labels(['result']) as ('result' | 'publication')[],
      registers,
    });
    this.openSeconds = new client.Histogram({
      name: 'underpass_tunnel_open_seconds',
      help: 'Time from a tunnel request to its spliced tunnel',
      labelNames: labels([]) as 'publication'[],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15],
      registers,
    });
    this.bytes = new client.Counter({
      name: 'underpass_tunnel_bytes_total',
      help: 'Bytes relayed through tunnels, by direction (upstream: towards the service)',
      labelNames: labels(['direction']) as ('direction' | 'publication')[],
      registers,
    });
    this.resumes = new client.Counter({
      name: 'underpass_resumes_total',
      help: 'Sessions and tunnel legs resumed after a link cut',
      labelNames: ['what'],
      registers,
    });
    this.refusals = new client.Counter({
      name: 'underpass_refusals_total',
      help: 'Refusals by cause (the error code)',
      labelNames: ['cause'],
      registers,
    });
    new client.Gauge({
      name: 'underpass_build_info',
      help: 'Version of the running program',
      labelNames: ['version', 'node', 'program'],
      registers,
    }).set({ version: options.version, node: process.version, program: options.program }, 1);
  }

  private publication(name: string | undefined): Record<string, string> {
    return this.options.perPublication ? { publication: name ?? ALL } : {};
  }

  /** A tunnel opened (`ok`) or was refused (its code), `seconds` after it was asked for. */
  tunnelOpened(result: string, publication?: string, seconds?: number): void {
    this.opens.inc({ result, ...this.publication(publication) });
    if (seconds !== undefined && result === 'ok') this.openSeconds.observe(this.publication(publication), seconds);
  }

  refused(cause: string): void {
    this.refusals.inc({ cause });
  }

  resumed(what: 'session' | 'tunnel'): void {
    this.resumes.inc({ what });
  }

  /**
   * A meter for one splice. `appSide` names the splice's side towards the app (default `a`): its bytes
   * go upstream, the other side's downstream. The labelled children are looked up once, not per chunk.
   */
  meter(publication?: string, appSide: 'a' | 'b' = 'a'): SpliceMeter {
    const labels = this.publication(publication);
    const up = this.bytes.labels({ direction: 'upstream', ...labels });
    const down = this.bytes.labels({ direction: 'downstream', ...labels });
    const upstream = (n: number): void => up.inc(n);
    const downstream = (n: number): void => down.inc(n);
    return appSide === 'a' ? { aToB: upstream, bToA: downstream } : { aToB: downstream, bToA: upstream };
  }

  /** The metrics as Prometheus text. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}

/** A route the metrics listener serves beside /metrics (the server's status page). */
export type ExtraRoute = (request: http.IncomingMessage, response: http.ServerResponse) => boolean;

/** Serves `/metrics` (and `extra`'s routes) on `address`; the listener is the program's only HTTP one. */
export async function serveMetrics(address: HostPort, metrics: Metrics, extra?: ExtraRoute): Promise<http.Server> {
  const server = http.createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://metrics');
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (url.pathname === '/metrics') {
      metrics.text().then(
        (text) => response.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
        (e: unknown) => response.writeHead(500).end(`metrics failed: ${String(e)}\n`),
      );
      return;
    }
    if (extra?.(request, response) === true) return;
    response.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
  });
  // A scraper that stalls mid-request holds nothing for long.
  server.requestTimeout = 10_000;
  server.headersTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new ConfigError(
          `cannot listen on --metrics ${address.host}:${address.port} (${e.code ?? e.message}): choose another`,
        ),
      ),
    );
    server.listen(address.port, address.host, () => resolve());
  });
  server.unref();
  return server;
}

/** The bound address of a metrics listener, for the log line. */
export function metricsAddress(server: http.Server): string {
  const a = server.address() as AddressInfo;
  return `${a.address}:${a.port}`;
}

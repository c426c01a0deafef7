/**
 * How the CLI loads each program: only when that program runs (its TLS, HTTP/2, WebSocket, certificate
 * and logging modules), so that `hook-run` and `--help` stay fast.
 */
import fs from 'node:fs';

/* eslint-disable @typescript-eslint/no-require-imports */
export const load = {
  log: () => require('../runtime/log') as typeof import('../runtime/log'),
  linkConfig: () => require('../runtime/link-config') as typeof import('../runtime/link-config'),
  server: () => require('../server/server') as typeof import('../server/server'),
  proxy: () => require('../proxy/proxy') as typeof import('../proxy/proxy'),
  proxyConfig: () => require('../proxy/config') as typeof import('../proxy/config'),
  redirector: () => require('../redirector/redirector') as typeof import('../redirector/redirector'),
  redirectorConfig: () => require('../redirector/config') as typeof import('../redirector/config'),
  service: () => require('./service') as typeof import('./service'),
  fallbacks: () => require('../redirector/fallback-listeners') as typeof import('../redirector/fallback-listeners'),
  forward: () => require('../redirector/forward') as typeof import('../redirector/forward'),
  tokens: () => require('../server/tokens') as typeof import('../server/tokens'),
  metrics: () => require('../runtime/metrics') as typeof import('../runtime/metrics'),
  ipcClient: () => require('../runtime/ipc-client') as typeof import('../runtime/ipc-client'),
  forwarding: () => require('../server/forwarding') as typeof import('../server/forwarding'),
  placement: () => require('../server/cluster/placement') as typeof import('../server/cluster/placement'),
  forwardRules: () => require('../protocol/forward-rules') as typeof import('../protocol/forward-rules'),
  statusPage: () => require('../server/status-page') as typeof import('../server/status-page'),
  hookRun: () => require('../hook/run') as typeof import('../hook/run'),
};

export const version = (JSON.parse(fs.readFileSync(`${__dirname}/../../package.json`, 'utf8')) as { version: string })
  .version;

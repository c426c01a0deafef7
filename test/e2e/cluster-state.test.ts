/**
 * Issue 14, part A: what two real `underpass server` nodes share through a real redis-server besides the
 * directory. A token issued with `underpass token create` on node a's data dir works at node b at once,
 * and revoking it there ends its session on node b; the accounts one node was started with hold on the
 * other, which was given none; a node's heartbeat names its address from the first; and a node whose
 * --token differs from the cluster's refuses to start in one line.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestCluster } from '../cluster';
import { freePort, Program, run, UNDERPASS } from '../harness';

/** `underpass token create` on `dataDir`: the token id and the secret (its last line). */
async function issue(dataDir: string): Promise<{ id: string; token: string }> {
  const r = await run(process.execPath, [UNDERPASS, 'token', 'create', '--data-dir', dataDir, '--account', 'default']);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  return { id: /^token (\S+) /.exec(lines[0]!)![1]!, token: lines.at(-1)! };
}

describe('cluster: tokens and accounts are the cluster’s (issue 14)', function () {
  this.timeout(120_000);
  let cluster: TestCluster;
  const programs: Program[] = [];
  const proxy = (node: string, token: string, name: string): Program => {
    const args = cluster.endpointArgs(node);
    args[args.indexOf('--token') + 1] = token;
    const program = new Program(`proxy ${name}`, process.execPath, [
      UNDERPASS,
      'proxy',
      ...args,
      '--json',
      '--publish',
      `${name}=127.0.0.1:9`,
    ]);
    programs.push(program);
    return program;
  };

  before(async function () {
    cluster = await new TestCluster(['a', 'b']).start();
  });
  after(async function () {
    await Promise.all(programs.map((p) => p.stop()));
    await cluster?.stop();
  });

  it("takes a token issued on one node's data dir at every node, and ends its sessions there when revoked", async function () {
    const issued = await issue(cluster.node('a').dataDir);
    await cluster.node('b').program.waitFor(/took the cluster's issued tokens/);
    const p = proxy('b', issued.token, 'issued');
    await p.waitFor(/"event":"published","name":"issued"/, 20_000, 'stdout');
    const revoked = await run(process.execPath, [
      UNDERPASS,
      'token',
      'revoke',
      issued.id,
      '--data-dir',
      cluster.node('a').dataDir,
    ]);
    assert.equal(revoked.code, 0, revoked.stderr);
    await cluster.node('b').program.waitFor(new RegExp(`its token ${issued.id} was revoked`));
    await p.waitFor(/refused the token|revoked/);
  });

  it('holds the accounts one node was started with on a node started without', async function () {
    const file = path.join(cluster.dir, 'accounts.json');
    const alice = 'alice-token-0123456789abcdef';
    fs.writeFileSync(file, JSON.stringify({ tokens: { alice } }));
    await cluster.startNode('c', ['--accounts', file]);
    const p = proxy('b', alice, 'mine');
    const m = await p.waitFor(/"event":"published","name":"mine","host":"([^"]+)"/, 20_000, 'stdout');
    assert.equal(m[1], 'mine.alice.underpass.internal', 'node b knows account alice from the cluster');
  });

  it('beats only once it listens, so its heartbeat names its address from the first', async function () {
    // Without --advertise: the node's address is what its listener got.
    const port = await freePort();
    const d = new Program('node d', process.execPath, [
      ...[UNDERPASS, 'server', '--listen', `127.0.0.1:${port}`, '--data-dir', path.join(cluster.dir, 'd')],
      ...['--token', cluster.token, '--cluster', `redis://127.0.0.1:${cluster.redisPort}`, '--node', 'd'],
    ]);
    programs.push(d);
    await d.waitFor(/listening on/);
    // The heartbeat is what sends endpoints to a node: one written before the listener was up named no
    // address, and a redirector sent there by a placement line stopped on "sent this endpoint to ''".
    const seen: string[] = [];
    while (seen.length === 0 || seen.at(-1) === '(none)') {
      const r = await run('redis-cli', ['-p', String(cluster.redisPort), 'GET', '{underpass}:node:d']);
      const text = r.stdout.trim();
      seen.push(text === '' ? '(none)' : (JSON.parse(text) as { advertise: string }).advertise);
      if (seen.length > 100) break;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    assert.equal(seen.filter((s) => s !== '(none)')[0], `127.0.0.1:${port}`, `heartbeats seen: ${seen.join(', ')}`);
  });

  it('refuses to start a node whose --token differs from the cluster’s, in one line', async function () {
    const r = await run(process.execPath, [
      UNDERPASS,
      'server',
      '--listen',
      `127.0.0.1:${await freePort()}`,
      '--data-dir',
      path.join(cluster.dir, 'stray'),
      '--token',
      'another-token-0123456789abcdef',
      '--cluster',
      `redis://127.0.0.1:${cluster.redisPort}`,
      '--node',
      'stray',
    ]);
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr.trim(),
      "underpass server: --token differs from the cluster's token of account default (in Redis): drop --token, or give that one",
    );
  });
});

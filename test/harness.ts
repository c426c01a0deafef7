/**
 * What the end-to-end tests start beside our programs: real third-party servers and clients, and a
 * chain that carries a line-echo service. The chain launcher itself is product code (cli/chain.ts,
 * which `npm run demo` runs); it is re-exported here for the tests.
 */
import { spawnSync } from 'node:child_process';
import { Chain, freePort, Program, PYTHON } from '../cli/chain';

export * from '../cli/chain';

export function which(command: string): string | null {
  const r = spawnSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

/**
 * A real line-echo server (Python's socketserver, one thread a connection): every line it reads comes
 * back as is, or upper-cased with `upper`.
 */
export function lineEchoServer(port: number, options: { upper?: boolean } = {}): Program {
  return new Program('echo', PYTHON, [
    '-c',
    `import socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile: self.wfile.write(line${options.upper === true ? '.upper()' : ''})
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(('127.0.0.1', ${port}), H).serve_forever()`,
  ]);
}

/**
 * A chain publishing one line-echo service (`echo`), and a check that it still carries a connection end
 * to end through hook-run: what the robustness tests run after each hostile act.
 */
export class EchoChain {
  chain!: Chain;
  echo!: Program;
  port = 0;

  async start(): Promise<this> {
    this.port = await freePort();
    this.echo = lineEchoServer(this.port);
    this.chain = await new Chain([`echo=127.0.0.1:${this.port}`]).start();
    return this;
  }

  async stop(): Promise<void> {
    await this.chain?.stop();
    await this.echo?.stop();
  }

  /** A blocking connect through hook-run gets its line back, and the server still runs. */
  async assertTunnelWorks(): Promise<void> {
    const r = await this.chain.hookRun([
      PYTHON,
      '-c',
      `import socket
s = socket.create_connection(('${this.chain.host('echo')}', ${this.port}), timeout=20); s.sendall(b'still here\\n'); print(s.recv(100).decode().strip())`,
    ]);
    if (r.stdout.trim() !== 'still here')
      throw new Error(`the chain no longer carries a connection: ${r.stdout}${r.stderr}`);
    if (this.chain.server.child.exitCode !== null) throw new Error('the server exited');
  }
}

/**
 * `npm run demo`: the whole chain on one machine, as a user would run it by hand. It starts a real web
 * server, publishes it through a service proxy to a tunnel server, starts a redirector, and has curl —
 * unmodified, under hook-run — fetch a page by its pseudo name. Every step prints what it ran.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Chain, freePort, httpServer, tmpDir } from '../cli/chain';

function step(text: string): void {
  process.stdout.write(`\n▶ ${text}\n`);
}

async function main(): Promise<number> {
  const webDir = tmpDir('demo-web');
  fs.writeFileSync(path.join(webDir, 'index.html'), 'Hello from behind the firewall, through Underpass.\n');
  const webPort = await freePort();
  step(
    `a real web server on 127.0.0.1:${webPort} (python3 -m http.server), standing in for the service behind a firewall`,
  );
  const web = httpServer(webPort, webDir);
  const chain = new Chain([`web=127.0.0.1:${webPort}`]);
  try {
    await web.waitFor(/Serving HTTP/);
    step('underpass server --listen 127.0.0.1:PORT --data-dir DIR   (the public tunnel server)');
    await chain.startServer();
    console.log(
      `  listening on 127.0.0.1:${chain.serverPort}; certificate ${chain.ca}; token in ${chain.dataDir}/token`,
    );
    step(`underpass proxy --publish web=127.0.0.1:${webPort} --json   (next to the real server; dials out)`);
    await chain.startProxy();
    console.log(`  ${JSON.stringify(chain.published.get('web'))}`);
    step('underpass redirector --ipc SOCKET   (on the client machine; dials out)');
    await chain.startRedirector();
    console.log(`  serving hooks on ${chain.ipcPath}`);
    const url = `http://${chain.host('web')}:${webPort}/`;
    step(`hook-run -- curl -sS ${url}   (an unmodified client)`);
    const started = Date.now();
    const r = await chain.hookRun(['curl', '-sS', url]);
    process.stdout.write(r.stdout.trimEnd().replace(/^/gm, '  ') + '\n');
    if (r.stderr.trim() !== '') process.stderr.write(r.stderr);
    if (r.code !== 0) {
      console.error(`\ndemo failed: curl exited with ${String(r.code)}`);
      return 1;
    }
    console.log(
      `\n✔ curl reached the published service through hook → redirector → tunnel server → proxy in ${Date.now() - started} ms (hook-run start-up included).`,
    );
    return 0;
  } finally {
    await chain.stop().catch(() => undefined);
    await web.stop();
    fs.rmSync(webDir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(`demo failed: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);

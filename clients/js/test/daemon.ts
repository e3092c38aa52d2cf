// Runs the real witmqd for the tests: on 127.0.0.1 with ephemeral ports and a temporary data
// directory. The binary is $WITMQD (ctest passes the one of the build tree), else
// ../../build/src/daemon/witmqd from this package.

import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const witmqd = process.env.WITMQD ?? resolve(fileURLToPath(import.meta.url), "../../../../build/src/daemon/witmqd");

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `witmq-js-${prefix}-`));
}

export class Daemon {
  readonly dir: string;
  port = 0;
  tlsPort = 0;
  private child: ChildProcess | null = null;
  private out = "";
  private err = "";

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** Starts witmqd with `args` (after --listen, --http-listen and --data-dir) and `config`, if any. */
  static async start(args: string[] = [], config?: Record<string, unknown>): Promise<Daemon> {
    const d = new Daemon(tempDir("daemon"));
    const all = ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data-dir", join(d.dir, "data")];
    if (config !== undefined) {
      const path = join(d.dir, "witmqd.json");
      writeFileSync(path, JSON.stringify(config));
      all.push("--config", path);
    }
    all.push(...args);
    await d.launch(all);
    return d;
  }

  private launch(args: string[]): Promise<void> {
    const child = spawn(witmqd, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    return new Promise((resolvePromise, reject) => {
      const timer = setTimeout(() => reject(new Error(`witmqd did not print its address within 30 s:\n${this.err}`)), 30000);
      child.stderr!.on("data", (b: Buffer) => {
        if (this.err.length < 1 << 20) this.err += b.toString();
      });
      child.stdout!.on("data", (b: Buffer) => {
        this.out += b.toString();
        const text = "\n" + this.out;
        if (!text.includes("\nlistening on 127.0.0.1:") || !text.endsWith("\n")) return;
        const port = (line: string) => {
          const m = new RegExp(`\\n${line}127\\.0\\.0\\.1:(\\d+)`).exec(text);
          return m === null ? 0 : Number(m[1]);
        };
        this.port = port("listening on ");
        this.tlsPort = port("tls listening on ");
        clearTimeout(timer);
        resolvePromise();
      });
      child.on("exit", (code) => {
        clearTimeout(timer);
        if (this.port === 0) reject(new Error(`witmqd exited with ${code} before listening:\n${this.err}`));
      });
    });
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get log(): string {
    return this.err;
  }

  /** Sends `signal` (SIGHUP: reload; SIGKILL: a crash) and, unless SIGHUP, waits for the exit. */
  async signal(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once("exit", () => r()));
    child.kill(signal);
    if (signal !== "SIGHUP") await exited;
  }

  /** Waits (at most 20 s) for `text` to appear in the log. */
  async waitForLog(text: string): Promise<void> {
    const deadline = Date.now() + 20000;
    while (!this.err.includes(text)) {
      if (Date.now() > deadline) throw new Error(`witmqd did not log '${text}' within 20 s:\n${this.err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Stops witmqd (SIGTERM, then SIGKILL after 20 s) and removes its directory. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = null;
    if (child !== null && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A token and its digest, as witmqd --generate-token makes them. */
export function generateToken(): { token: string; sha256: string } {
  const out = execFileSync(witmqd, ["--generate-token"]).toString();
  const token = /token:\s+(\S+)/.exec(out)?.[1];
  const sha256 = /token-sha256:\s+(\S+)/.exec(out)?.[1];
  if (token === undefined || sha256 === undefined) throw new Error(`witmqd --generate-token printed: ${out}`);
  return { token, sha256 };
}

/**
 * Certificates made with the openssl command: a CA, a server certificate for localhost and
 * 127.0.0.1 signed by it, a client certificate (CN witmq-js-client) signed by it, and another CA.
 */
export function makeCertificates(dir: string): (name: string) => { pem: string; key: string } {
  const openssl = (args: string) => execFileSync("sh", ["-c", `cd '${dir}' && openssl ${args}`], { stdio: "pipe" });
  const ca = (name: string, cn: string) =>
    openssl(
      `req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -keyout ${name}.key -out ${name}.pem ` +
        `-subj '/CN=${cn}' -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign`,
    );
  let serial = 0;
  const leaf = (name: string, caName: string, cn: string, ext: string) => {
    writeFileSync(join(dir, `${name}.ext`), `basicConstraints=CA:FALSE\n${ext}`);
    openssl(`req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ${name}.key -out ${name}.csr -subj '/CN=${cn}'`);
    openssl(`x509 -req -in ${name}.csr -CA ${caName}.pem -CAkey ${caName}.key -set_serial ${++serial} -days 2 -extfile ${name}.ext -out ${name}.pem`);
  };
  ca("ca", "witmq js test CA");
  ca("other-ca", "another test CA");
  leaf("server", "ca", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
  leaf("client", "ca", "witmq-js-client", "extendedKeyUsage=clientAuth\n");
  return (name) => ({ pem: join(dir, `${name}.pem`), key: join(dir, `${name}.key`) });
}

/** A channel name no other test uses. */
let channelCounter = 0;
export function uniqueChannel(prefix = "js"): string {
  return `${prefix}.${process.pid}.${Date.now().toString(36)}.${++channelCounter}`;
}

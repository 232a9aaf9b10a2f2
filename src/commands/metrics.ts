// Prometheus metrics of `praxmail serve --metrics host:port`: prom-client behind the core's
// Meter interface, on a plain-HTTP listener of its own that answers GET /metrics and 404 for
// everything else; the public portal never serves them. serve loads this module (and with it
// prom-client) only when --metrics is given. Labels are levels, status classes, error codes,
// queue names and sources, each from a short fixed set or checked against a narrow pattern:
// never an address, an id, a file name or a subject.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { PraxmailError, type MailDoor, type Meter } from "../core/index.js";
import type { Listen } from "../relay/server.js";

/** Seconds: from a small level-0 mail (milliseconds) to a large encrypted one on S3 (a minute). */
const MAIL_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const BLOB_BUCKETS = [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** An error code as a label: errnos, SQLSTATEs and PraxmailError codes fit; anything else is "other". */
const CODE = /^[A-Za-z0-9_-]{1,32}$/;

const levelLabel = (level: number | null): string => (level !== null && Number.isInteger(level) && level >= 0 && level <= 4 ? String(level) : "unknown");
const statusClass = (code: number): string => (code >= 100 && code < 600 ? `${String(Math.floor(code / 100))}xx` : "other");
const codeLabel = (code: string | number | null): string => (code === null ? "none" : CODE.test(String(code)) ? String(code) : "other");

/** The counters, gauges and histograms, and the Meter the core and the adapters report to. */
class PromMeter implements Meter {
  private readonly mails: Counter<"door" | "level" | "answer">;
  private readonly mailSeconds: Histogram<"door">;
  private readonly deliveries: Counter<"level">;
  private readonly downloads: Counter;
  private readonly responses: Counter<"class">;
  private readonly blobSeconds: Histogram;
  private readonly errors: Counter<"source" | "code">;
  private readonly queues = new Map<string, () => number>();

  constructor(registers: Registry[]) {
    this.mails = new Counter({ name: "praxmail_mails_total", help: "Mails answered by the relay or the milter, by security level and SMTP answer class", labelNames: ["door", "level", "answer"], registers });
    this.mailSeconds = new Histogram({ name: "praxmail_mail_seconds", help: "Time from a mail's data to its answer", labelNames: ["door"], buckets: MAIL_BUCKETS, registers });
    this.deliveries = new Counter({ name: "praxmail_deliveries_created_total", help: "Deliveries committed, by security level", labelNames: ["level"], registers });
    this.downloads = new Counter({ name: "praxmail_downloads_total", help: "Files of deliveries handed to patients for download", registers });
    this.responses = new Counter({ name: "praxmail_http_responses_total", help: "Portal responses by status class", labelNames: ["class"], registers });
    this.blobSeconds = new Histogram({ name: "praxmail_blob_write_seconds", help: "Time to stream a blob into the store until it is durable", buckets: BLOB_BUCKETS, registers });
    this.errors = new Counter({ name: "praxmail_errors_total", help: "Failures by where they happened and their error code", labelNames: ["source", "code"], registers });
    const queues = this.queues;
    new Gauge({
      name: "praxmail_queue_waiting",
      help: "Items waiting in a work queue",
      labelNames: ["queue"],
      registers,
      collect() {
        for (const [name, waiting] of queues) this.set({ queue: name }, waiting());
      },
    });
  }

  mail(door: MailDoor, level: number | null, answer: number, seconds: number): void {
    this.mails.inc({ door, level: levelLabel(level), answer: statusClass(answer) });
    this.mailSeconds.observe({ door }, seconds);
  }

  deliveriesCreated(level: number, count: number): void {
    this.deliveries.inc({ level: levelLabel(level) }, count);
  }

  downloaded(): void {
    this.downloads.inc();
  }

  response(status: number): void {
    this.responses.inc({ class: statusClass(status) });
  }

  blobWritten(seconds: number): void {
    this.blobSeconds.observe(seconds);
  }

  failed(source: string, code: string | number | null): void {
    this.errors.inc({ source: codeLabel(source), code: codeLabel(code) });
  }

  queue(name: string, waiting: () => number): void {
    this.queues.set(name, waiting);
  }
}

/**
 * @param host - A listen host.
 * @returns Whether only this machine can reach it.
 */
function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/i.test(host);
}

/** The metrics of one serve process. */
export interface Metrics {
  readonly meter: Meter;
  /**
   * Starts the listener.
   *
   * @returns Its address (with the port picked for port 0) and how to close it.
   */
  listen(): Promise<{ readonly address: Listen; close(): Promise<void> }>;
}

function answer(registry: Registry, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? "").split("?")[0];
  if (path !== "/metrics" || (req.method !== "GET" && req.method !== "HEAD")) {
    res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end("not found\n");
    return;
  }
  registry.metrics().then(
    (text) => {
      res.writeHead(200, { "content-type": registry.contentType, "cache-control": "no-store" }).end(req.method === "HEAD" ? undefined : text);
    },
    () => {
      res.writeHead(500, { "content-type": "text/plain; charset=utf-8" }).end("metrics failed\n");
    },
  );
}

/**
 * Sets up the metrics of `serve --metrics`.
 *
 * @param at - Where to listen.
 * @param remote - Whether an address other than loopback is allowed (`--metrics-remote`).
 * @returns The meter for the context, and the listener to start.
 * @throws {@link PraxmailError} `usage` for an address other machines can reach, without `remote`.
 */
export function createMetrics(at: Listen, remote: boolean): Metrics {
  if (!remote && !isLoopback(at.host)) {
    throw new PraxmailError(
      "usage",
      `--metrics ${at.host}:${String(at.port)} is not a loopback address`,
      "metrics show mail and download volumes (no patient data): listen on 127.0.0.1 and scrape through a tunnel or a proxy, or pass --metrics-remote and let only the Prometheus server reach that port",
    );
  }
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const meter = new PromMeter([registry]);
  return {
    meter,
    async listen() {
      const server = createServer((req, res) => {
        answer(registry, req, res);
      });
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(at.port, at.host, () => {
          server.off("error", reject);
          resolve();
        });
      });
      const addr = server.address() as AddressInfo;
      return {
        address: { host: addr.address, port: addr.port },
        close: () =>
          new Promise<void>((resolve) => {
            server.closeAllConnections();
            server.close(() => {
              resolve();
            });
          }),
      };
    },
  };
}

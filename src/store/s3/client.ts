// The S3 client of the shared backend, set up for every S3-compatible server, not only AWS.
import { createHash } from "node:crypto";
import { S3Client } from "@aws-sdk/client-s3";

/** Where and as whom to reach the bucket; unset fields come from the SDK's usual sources. */
export interface S3Settings {
  /** AWS_ENDPOINT_URL_S3: a server other than AWS (Ceph, MinIO, Swift), addressed by path. */
  readonly endpoint?: string;
  /** AWS_REGION. */
  readonly region?: string;
  /** AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string };
}

/**
 * An S3 client that works with AWS and with the S3 APIs of Ceph, MinIO and Swift:
 * - checksums only where S3 requires them: the SDK's default since 2025 sends a streamed
 *   body as aws-chunked with a trailing checksum, which Swift 2.30 answers with 501;
 * - DeleteObjects carries Content-MD5, which Swift requires and the SDK no longer sends
 *   (AWS accepts it too);
 * - path-style addressing whenever an endpoint is given (no bucket DNS names needed).
 *
 * @param settings - Endpoint, region and credentials; the environment fills in the rest.
 * @returns The client.
 */
export function s3Client(settings: S3Settings = {}): S3Client {
  // The SDK warns on every start under Node 20 that SDK releases after January 2027 will
  // need Node 22. praxmail pins its SDK version, so the warning says nothing to an admin;
  // the SDK's own switch turns it off.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
  const endpoint = settings.endpoint ?? process.env.AWS_ENDPOINT_URL_S3;
  const s3 = new S3Client({
    ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
    region: settings.region ?? process.env.AWS_REGION ?? "us-east-1",
    ...(settings.credentials ? { credentials: { ...settings.credentials } } : {}),
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  s3.middlewareStack.add(
    (next, context) => async (args) => {
      const request = args.request as { headers?: Record<string, string>; body?: unknown };
      if (context.commandName === "DeleteObjectsCommand" && typeof request.body === "string" && request.headers) {
        request.headers["content-md5"] = createHash("md5").update(request.body).digest("base64");
      }
      return next(args);
    },
    { step: "build", name: "contentMd5ForSwift" },
  );
  return s3;
}

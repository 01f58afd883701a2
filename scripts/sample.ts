// Builds a small sample OCI image without any external tool: a gzip'd tar layer with a few
// files, an image config and a manifest, written into an OCI image layout. Used by the demo.
import { createHash } from "node:crypto";
import { join } from "node:path";

const enc = new TextEncoder();

function sha256(bytes: Uint8Array): string {
  return "sha256:" + createHash("sha256").update(bytes).digest("hex");
}

/** One ustar header + padded content per file, then two zero blocks. */
export function tar(files: Record<string, string | Uint8Array>): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const [name, content] of Object.entries(files)) {
    const data = typeof content === "string" ? enc.encode(content) : content;
    const header = new Uint8Array(512);
    const put = (s: string, off: number, len: number) =>
      header.set(enc.encode(s).slice(0, len), off);
    const octal = (n: number, len: number) => n.toString(8).padStart(len - 1, "0") + "\0";
    put(name, 0, 100);
    put(octal(0o644, 8), 100, 8);
    put(octal(0, 8), 108, 8);
    put(octal(0, 8), 116, 8);
    put(octal(data.length, 12), 124, 12);
    put(octal(Math.floor(Date.UTC(2024, 0, 1) / 1000), 12), 136, 12);
    put("        ", 148, 8);
    put("0", 156, 1);
    put("ustar\0", 257, 6);
    put("00", 263, 2);
    const sum = header.reduce((a, b) => a + b, 0);
    put(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8);
    parts.push(header, data, new Uint8Array((512 - (data.length % 512)) % 512));
  }
  parts.push(new Uint8Array(1024));
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new CompressionStream("gzip"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function putBlob(layout: string, bytes: Uint8Array): Promise<string> {
  const digest = sha256(bytes);
  await Deno.writeFile(join(layout, "blobs", "sha256", digest.slice(7)), bytes);
  return digest;
}

/** Write a one-layer sample image into a new layout at `layout`, tagged `tag`. */
export async function writeSampleImage(layout: string, tag: string): Promise<string> {
  await Deno.mkdir(join(layout, "blobs", "sha256"), { recursive: true });
  await Deno.writeTextFile(join(layout, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
  const layerTar = tar({
    "etc/os-release": 'NAME="umoci-copy sample"\nVERSION="1.0"\n',
    "hello.txt": "Hello from an OCI image built by the umoci-copy demo.\n",
    "data/random.bin": crypto.getRandomValues(new Uint8Array(48 * 1024)),
  });
  const layer = await gzip(layerTar);
  const layerDigest = await putBlob(layout, layer);
  const config = enc.encode(JSON.stringify({
    created: "2024-01-01T00:00:00Z",
    architecture: "amd64",
    os: "linux",
    config: { Cmd: ["/bin/cat", "/hello.txt"] },
    rootfs: { type: "layers", diff_ids: [sha256(layerTar)] },
    history: [{ created: "2024-01-01T00:00:00Z", created_by: "umoci-copy demo" }],
  }));
  const configDigest = await putBlob(layout, config);
  const manifest = enc.encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {
      mediaType: "application/vnd.oci.image.config.v1+json",
      digest: configDigest,
      size: config.length,
    },
    layers: [{
      mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
      digest: layerDigest,
      size: layer.length,
    }],
  }));
  const manifestDigest = await putBlob(layout, manifest);
  await Deno.writeTextFile(
    join(layout, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        digest: manifestDigest,
        size: manifest.length,
        annotations: { "org.opencontainers.image.ref.name": tag },
      }],
    }),
  );
  return manifestDigest;
}

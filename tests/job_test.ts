// Unit tests of the naming rules of a many-image job (src/cli/job.ts).
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  fullName,
  parseRegistryPrefix,
  planImages,
  planTags,
  readImageList,
  splitFullName,
} from "../src/cli/job.ts";
import { formatReference, parseReference } from "../src/reference.ts";
import { UsageError, UserError } from "../src/errors.ts";
import * as fx from "./fixtures/images.ts";
import { JobLanes } from "../src/copy.ts";

Deno.test("job: an images file: comments, blank lines, scheme-less lines are Docker references", async () => {
  await fx.withTempDir(async (tmp) => {
    const file = join(tmp, "list");
    await Deno.writeTextFile(
      file,
      "# bundle\n\nalpine:3.20\nquay.io/org/app:v1   # trailing comment\n" +
        "oci://localhost:5000/x/y:z\noci-archive:/b.tar:t\noci:/some/dir:t2\n",
    );
    const refs = await readImageList(file);
    assert.deepEqual(refs.map(formatReference), [
      "docker.io/library/alpine:3.20",
      "quay.io/org/app:v1",
      "localhost:5000/x/y:z",
      "oci-archive:/b.tar:t",
      "/some/dir:t2", // skopeo's spelling of a layout, as on the command line
    ]);
    await Deno.writeTextFile(file, "ok:1\nBad Ref\n");
    await assert.rejects(
      () => readImageList(file),
      (e) => e instanceof UsageError && /line 2/.test(e.message),
    );
    await Deno.writeTextFile(file, "# nothing\n");
    await assert.rejects(() => readImageList(file), UsageError);
  });
});

Deno.test("job: into a prefix PREFIX/REPO-PATH:TAG; into a layout or archive the full reference", () => {
  const images = ["docker://alpine:3.20", "oci://quay.io/org/app:v1"].map(parseReference);
  assert.deepEqual(
    planImages(images, "oci://mirror:5000/base").map(({ dst }) => formatReference(dst)),
    ["mirror:5000/base/library/alpine:3.20", "mirror:5000/base/org/app:v1"],
  );
  assert.deepEqual(
    planImages(images, "oci://mirror:5000").map(({ dst }) => formatReference(dst)),
    ["mirror:5000/library/alpine:3.20", "mirror:5000/org/app:v1"],
  );
  assert.deepEqual(
    planImages(images, "oci-archive:b.tar").map(({ dst }) => dst.tag),
    ["docker.io/library/alpine:3.20", "quay.io/org/app:v1"],
  );
  assert.equal(fullName(parseReference("oci://h:1/r:t")), "h:1/r:t");
  // A layout by digest has no name to be stored under: a fault of the list, exit 2.
  assert.throws(
    () => planImages([parseReference(`ocidir:///l@sha256:${"e".repeat(64)}`)], "bundle"),
    (e) => e instanceof UsageError && /needs a tag here/.test(e.message),
  );
  assert.throws(() => planImages(images, "b.tar:x"), UsageError);
  assert.throws(() => parseRegistryPrefix("oci://h/p:tag"), UsageError);
  assert.equal(parseRegistryPrefix("some/dir"), undefined);
});

Deno.test("job: an image listed by digest alone goes under the prefix by digest, untagged", () => {
  const digest = `sha256:${"ab".repeat(32)}`;
  const [{ dst }] = planImages([parseReference(`oci://h:1/org/app@${digest}`)], "oci://m:5000/p");
  // Never under `sha256-HEX`: that tag name is the referrers tag schema's. Pushed by the
  // digest copied (a platform's, with --platform), so the destination names none itself.
  assert.equal(dst.tag, undefined);
  assert.equal(dst.digest, undefined);
  assert.equal(formatReference(dst), "m:5000/p/org/app");
});

Deno.test("job: two different images written under one name are refused before anything is copied", () => {
  const refuse = (list: string[], dst: string) =>
    assert.throws(
      () => planImages(list.map(parseReference), dst),
      (e) =>
        e instanceof UsageError && e.message.includes(list[0]) && e.message.includes(list[1]) &&
        /would both be written to/.test(e.message),
    );
  // Layouts' tags are their names in a bundle: two `amd` images collide.
  refuse(["ocidir:///tmp/base:amd", "ocidir:///tmp/other:amd"], "bundle");
  refuse(["ocidir:///tmp/base:amd", "oci-archive:/tmp/o.tar:amd"], "oci-archive:b.tar");
  // The same repository and tag from two registries, into one prefix.
  refuse(["oci://a:1/t/m:v1", "oci://b:2/t/m:v1"], "oci://mirror:5000");
  // The same image listed twice, in any spelling, is one image, copied once.
  const spellings: [string[], string[]][] = [
    [["docker://alpine:3.20", "docker://docker.io/library/alpine:3.20"], [
      "oci://mirror:5000",
      "bundle",
    ]],
    [["docker://alpine:3.20", "oci://index.docker.io/library/alpine:3.20"], ["oci://m:5000"]],
    [["oci://Reg.example.com/a/b:1", "oci://reg.example.com/a/b:1"], ["oci://m:5000"]],
    [[`ocidir://${Deno.cwd()}/a:amd`, "oci:a:amd", "ocidir://./a:amd"], ["bundle"]],
  ];
  for (const [same, dsts] of spellings) {
    for (const dst of dsts) {
      assert.equal(planImages(same.map(parseReference), dst).length, 1, `${same} into ${dst}`);
    }
  }
  // One digest from two registries: pushed by that digest, untagged, twice is harmless.
  const d = `sha256:${"cd".repeat(32)}`;
  const byDigest = [`oci://a:1/t/m@${d}`, `oci://b:2/t/m@${d}`].map(parseReference);
  assert.equal(planImages(byDigest, "oci://mirror:5000").length, 2);
  // A bundle restored with --all-tags: two full names that map to one repository and tag.
  assert.throws(
    () =>
      planTags(
        parseReference("oci-archive:/b.tar"),
        ["docker.io/library/alpine:3.20", "quay.io/library/alpine:3.20"],
        "oci://mirror:5000/base",
      ),
    (e) =>
      e instanceof UsageError &&
      e.message.startsWith(
        "--all-tags: oci-archive:/b.tar:docker.io/library/alpine:3.20 and " +
          "oci-archive:/b.tar:quay.io/library/alpine:3.20 would both be written to " +
          "mirror:5000/base/library/alpine:3.20",
      ),
  );
});

Deno.test("job: a bundle's full references map back under the prefix; plain tags to DST's repository", () => {
  assert.deepEqual(splitFullName("docker.io/library/alpine:3.20"), {
    path: "library/alpine",
    tag: "3.20",
  });
  assert.deepEqual(splitFullName("localhost:5000/app:v1"), { path: "app", tag: "v1" });
  assert.deepEqual(splitFullName("library/alpine:3.20"), { path: "library/alpine", tag: "3.20" });
  assert.equal(splitFullName("v1"), undefined);
  const src = parseReference("oci-archive:b.tar");
  const plan = planTags(src, ["docker.io/library/alpine:3.20", "v1"], "oci://m/base");
  assert.deepEqual(plan.map(({ dst }) => formatReference(dst)), [
    "m/base/library/alpine:3.20",
    "m/base:v1",
  ]);
  assert.deepEqual(plan.map(({ src }) => src.tag), ["docker.io/library/alpine:3.20", "v1"]);
  assert.throws(() => planTags(src, ["v1"], "oci://m"), UserError);
  assert.throws(() => planTags(src, ["not a ref"], "oci://m/base"), UserError);
});

Deno.test("job: JobLanes.claim makes a second copy of a blob wait for the first, per place", async () => {
  const lanes = new JobLanes(2);
  const order: string[] = [];
  const first = await lanes.claim("layout a", "sha256:1");
  const elsewhere = await lanes.claim("layout b", "sha256:1"); // another place: no wait
  const second = lanes.claim("layout a", "sha256:1").then((release) => {
    order.push("second");
    return release;
  });
  await new Promise((r) => setTimeout(r, 10));
  order.push("first done");
  first();
  (await second)();
  elsewhere();
  assert.deepEqual(order, ["first done", "second"]);
  // The large lane holds `jobs` at once, the small one twice as many.
  assert.deepEqual([lanes.large.limit, lanes.small.limit, lanes.manifests.limit], [2, 4, 4]);
});

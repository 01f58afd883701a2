// umoci-copy: copy OCI images between image layouts and registries.
import { run } from "./src/cli/main.ts";

Deno.exit(await run(Deno.args));

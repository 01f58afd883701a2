// `deno task umoci …`: deno runs tasks in the repository root, but relative paths on the
// command line mean the directory the user typed them in (INIT_CWD, which deno task sets),
// as with any installed command.
const from = Deno.env.get("INIT_CWD");
if (from) Deno.chdir(from);
await import("../main.ts");

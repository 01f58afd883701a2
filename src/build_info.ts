// Written by scripts/build.ts when building a release artifact; empty in a source checkout.
export const BUILD_COMMIT = "";

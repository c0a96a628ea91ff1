#!/usr/bin/env node
// Regenerates docs/errors.md from ERROR_CODES (src/errors.ts, compiled); src/errors.test.ts
// fails when the two disagree.  node scripts/gen-errors-doc.mjs
import { writeFileSync } from 'node:fs';
import path from 'node:path';
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const { ERROR_CODES } = await import(path.join(root, 'dist/src/errors.js'));
const head = `# Error codes

Every failure isola reports carries one of these stable codes. The CLI exits with the code's exit
status and the HTTP API answers with its status. The source of truth is \`ERROR_CODES\` in
[src/errors.ts](../src/errors.ts); \`src/errors.test.ts\` fails when this table and the code disagree
(\`node scripts/gen-errors-doc.mjs\` regenerates it).

| code | CLI exit code | HTTP status | meaning |
| --- | --- | --- | --- |
`;
const rows = Object.entries(ERROR_CODES).map(
  ([c, v]) => `| \`${c}\` | ${v.exit} | ${v.http} | ${v.doc} |`,
);
writeFileSync(path.join(root, 'docs/errors.md'), `${head}${rows.join('\n')}\n`);

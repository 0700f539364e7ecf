// Fails when a built file is larger than 5 KiB gzipped: the SDK's size budget.
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const LIMIT = 5120;
let failed = false;
for (const file of process.argv.slice(2)) {
  const bytes = readFileSync(file);
  const gzipped = gzipSync(bytes).length;
  const ok = gzipped <= LIMIT;
  failed ||= !ok;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${file}: ${bytes.length} bytes, ${gzipped} gzipped (limit ${LIMIT})`);
}
process.exit(failed ? 1 : 0);

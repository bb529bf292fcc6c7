// Writes the code generator's CUDA for documentMask(ids) (lib/mods/codegen-cuda.ts) to stdout:
// flex_docgen.cu includes it as build/gen_doc_mod.cuh, so the harness measures the
// generator's current output (needs `npm run build:ts`; build.sh runs this).
import { generateCuda } from '../../dist/lib/mods/codegen-cuda.js';
import { documentMask, Tensor } from '../../dist/lib/index.js';

const ids = Tensor.fromHost(new Int32Array(2), [1, 2], 'i32', { device: 'cpu' });
process.stdout.write(generateCuda(undefined, documentMask(ids)).source);

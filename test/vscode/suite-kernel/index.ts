/**
 * Mocha entry of the real-kernel VS Code suite (npm run test:vscode:kernel): the same runner as the main
 * suite (../suite/index.ts), run over the *.test.js files bundled next to this one
 * (out/test/vscode/suite-kernel/). It runs in code-server's extension host INSIDE the qemu guest.
 */
export { run } from '../suite/index.js';

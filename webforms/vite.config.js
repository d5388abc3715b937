// Builds src/main.js into ../server/web/static/webforms/ (scripts/build_webforms.py runs it).
// File names carry no hashes: the console versions asset URLs by their content itself, and
// fixed names make the build comparable byte for byte with the committed files.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: './',
  logLevel: 'warn',
  define: {
    'process.env.NODE_ENV': JSON.stringify('production'),
    __VUE_OPTIONS_API__: 'true',
    __VUE_PROD_DEVTOOLS__: 'false',
    __VUE_PROD_HYDRATION_MISMATCH_DETAILS__: 'false',
  },
  build: {
    // WEBFORMS_OUT_DIR: scripts/build_webforms.py --check builds elsewhere and compares.
    outDir:
      process.env.WEBFORMS_OUT_DIR ||
      fileURLToPath(new URL('../server/web/static/webforms', import.meta.url)),
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    reportCompressedSize: false,
    chunkSizeWarningLimit: 8000,
    minify: 'esbuild',
    modulePreload: false,
    rollupOptions: {
      input: fileURLToPath(new URL('src/main.js', import.meta.url)),
      preserveEntrySignatures: false,
      output: {
        entryFileNames: 'webforms.js',
        chunkFileNames: '[name].js',
        assetFileNames: '[name][extname]',
      },
    },
  },
});

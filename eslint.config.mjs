// Lint rules for every TypeScript and JavaScript file of the project; `npm run lint` runs it with both
// type-checks. Formatting is Prettier's job, so no stylistic rule lives here.
import js from '@eslint/js';
import mocha from 'eslint-plugin-mocha';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.venv/**', 'bench/results/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      'no-console': 'off',
    },
  },
  {
    files: ['**/*.mjs'],
    languageOptions: { globals: { process: 'readonly', console: 'readonly', URL: 'readonly' } },
  },
  {
    // The launchers npm installs are CommonJS: they load dist/ and must run before anything is built.
    files: ['bin/*.js'],
    languageOptions: {
      sourceType: 'commonjs',
      globals: { process: 'readonly', require: 'readonly', module: 'writable', __dirname: 'readonly' },
    },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    // The agent runs on Frida's ES2020 runtime, whose Error has no `cause`: the cause's text goes into
    // the message instead.
    files: ['hook/agent/**/*.ts'],
    rules: { 'preserve-caught-error': 'off' },
  },
  {
    // Product code never imports test code (the chain launcher the demo and the bench use is cli/chain.ts).
    files: ['**/*.ts'],
    ignores: ['test/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['**/test/*', '**/test/**'], message: 'product code must not import test code' }] },
      ],
    },
  },
  {
    files: ['test/**/*.ts'],
    plugins: { mocha },
    rules: { 'mocha/no-exclusive-tests': 'error', 'mocha/no-identical-title': 'error' },
  },
);

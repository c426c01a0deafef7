import assert from 'node:assert/strict';
import {
  ERROR_CODES,
  errorOfCode,
  isErrorCode,
  isUnderpassError,
  NotFoundError,
  ProtocolError,
  UnderpassError,
} from '../../protocol/errors';
import { StatusOf } from '../../protocol/wire';
import fs from 'node:fs';
import path from 'node:path';

describe('protocol/errors: one class per failure', function () {
  it('gives every code its own class, which carries the code and the message as they came', function () {
    const classes = new Set<string>();
    for (const code of ERROR_CODES) {
      const error = errorOfCode(code, `message of ${code}`);
      assert.ok(error instanceof UnderpassError && isUnderpassError(error));
      assert.equal(error.code, code);
      assert.equal(error.message, `message of ${code}`);
      assert.equal(error.name, error.constructor.name);
      classes.add(error.constructor.name);
    }
    assert.equal(classes.size, ERROR_CODES.length);
    assert.ok(errorOfCode('UP_ERR_FRAME_TOO_LARGE', 'x') instanceof ProtocolError);
    assert.ok(errorOfCode('UP_ERR_NOT_FOUND', 'x') instanceof NotFoundError);
  });

  it('knows its codes and no others', function () {
    for (const code of ERROR_CODES) assert.ok(isErrorCode(code));
    for (const other of ['UP_ERR_BUSY', 'UP_ERR_', 'up_err_auth', '', 42, null]) assert.ok(!isErrorCode(other));
  });

  it('documents every code in PROTOCOL.md, with its class', function () {
    const doc = fs.readFileSync(path.join(__dirname, '..', '..', '..', 'protocol', 'PROTOCOL.md'), 'utf8');
    for (const code of ERROR_CODES) {
      const name = errorOfCode(code, '').constructor.name;
      assert.match(doc, new RegExp(`\\| \`${code}\` \\| \`${name}\` \\|`), code);
    }
    for (const code of Object.keys(StatusOf)) assert.ok(isErrorCode(code), code);
  });
});

import assert from 'node:assert/strict';
import { ConfigError } from '../../protocol/errors';
import fs from 'node:fs';
import path from 'node:path';
import { PseudoAddressTable } from '../../redirector/pseudo-table';
import { tmpDir } from '../harness';

describe('redirector/pseudo-table: one answer per name', function () {
  it('gives each name one stable loopback address and maps it back', function () {
    const table = new PseudoAddressTable('127.77.0.0/16');
    const a = table.addressOf('redis.default.underpass.internal');
    const b = table.addressOf('web.default.underpass.internal');
    assert.equal(a, '127.77.0.1');
    assert.equal(b, '127.77.0.2');
    assert.equal(table.addressOf('redis.default.underpass.internal'), a);
    assert.equal(table.tryNameOf(b), 'web.default.underpass.internal');
    assert.equal(table.tryNameOf('127.77.0.9'), null);
  });

  it('keeps its answers across a restart, and ignores entries outside the range', function () {
    const dir = tmpDir('table');
    const file = path.join(dir, 'addresses.json');
    const first = new PseudoAddressTable('127.77.0.0/16', file);
    const a = first.addressOf('a.default.underpass.internal');
    const b = first.addressOf('b.default.underpass.internal');
    const again = new PseudoAddressTable('127.77.0.0/16', file);
    assert.equal(again.addressOf('b.default.underpass.internal'), b);
    assert.equal(again.tryNameOf(a), 'a.default.underpass.internal');
    assert.equal(again.addressOf('c.default.underpass.internal'), '127.77.0.3', 'new names never reuse a kept address');
    const elsewhere = new PseudoAddressTable('127.99.0.0/16', file);
    assert.equal(elsewhere.tryNameOf(a), null);
    fs.writeFileSync(file, 'not json');
    assert.equal(new PseudoAddressTable('127.77.0.0/16', file).addressOf('z'), '127.77.0.1');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('accepts only loopback ranges, so a missed connect never leaves the machine', function () {
    for (const bad of ['10.0.0.0/8', '100.64.0.0/10', '198.18.0.0/15', '127.0.0.0/4', 'x/16']) {
      assert.throws(() => new PseudoAddressTable(bad), ConfigError, bad);
    }
  });

  it('says when the range is full', function () {
    const table = new PseudoAddressTable('127.99.0.0/30');
    table.addressOf('a');
    table.addressOf('b');
    assert.throws(() => table.addressOf('c'), ConfigError);
  });
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bandwidthMbit } from './attach.js';

test('bandwidth per sandbox: 200 Mbit/s unless set; 0 turns shaping off; nonsense keeps the default', () => {
  assert.equal(bandwidthMbit({}), 200);
  assert.equal(bandwidthMbit({ ISOLA_NET_MBIT: '50' }), 50);
  assert.equal(bandwidthMbit({ ISOLA_NET_MBIT: '0' }), 0);
  assert.equal(bandwidthMbit({ ISOLA_NET_MBIT: 'fast' }), 200);
  assert.equal(bandwidthMbit({ ISOLA_NET_MBIT: '-1' }), 200);
});

// zigbee-herdsman (Zigbee2MQTT's stack), with its `ember` adapter, as a second host of
// gatewayd's EZSP NCP emulator: start (the network is formed), stop, start again (the
// network is found, not formed again), a plug joins and is interviewed, its state is read
// and it is switched. Driven by tests/test_zigbee_herdsman.py.
//
//   node run.js NCP_PORT CONTROL_PORT WORKDIR
//
// Prints one JSON object per line: {"step": ..., ...}; exits 0 when every step passed.
'use strict';
const fs = require('fs');
const net = require('net');
const path = require('path');
const {Controller} = require('zigbee-herdsman');

const [ncpPort, controlPort, workdir] = process.argv.slice(2);
const PLUG = '00:0d:6f:00:00:00:00:09';
const STEP_TIMEOUT = 30000;

function say(step, fields) {
  console.log(JSON.stringify({step, ...fields}));
}

// One request to the emulator's control port (JSON lines).
function control(request) {
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(controlPort), '127.0.0.1',
                               () => socket.write(JSON.stringify(request) + '\n'));
    let buffer = '';
    socket.on('data', (data) => {
      buffer += data;
      if (buffer.includes('\n')) {
        socket.end();
        const reply = JSON.parse(buffer);
        if (reply.ok) resolve(reply.result);
        else reject(new Error(`control ${request.op}: ${reply.error}`));
      }
    });
    socket.on('error', reject);
  });
}

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), STEP_TIMEOUT);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function controller() {
  return new Controller({
    // What Zigbee2MQTT passes: the network it wants (formed if the NCP has none).
    network: {panID: 0x1a62, extendedPanID: [0xdd, 0xdd, 0xdd, 0xdd, 0xdd, 0xdd, 0xdd, 0xdd],
              channelList: [15], networkKey: [1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10,
                                              12, 13]},
    serialPort: {path: `tcp://127.0.0.1:${ncpPort}`, adapter: 'ember'},
    databasePath: path.join(workdir, 'database.db'),
    databaseBackupPath: path.join(workdir, 'database.db.backup'),
    backupPath: path.join(workdir, 'coordinator_backup.json'),
    adapter: {disableLED: false},
    acceptJoiningDeviceHandler: async () => true,
  });
}

async function formed() {
  return (await control({op: 'counters'})).commands.formNetwork || 0;
}

async function main() {
  const version = JSON.parse(fs.readFileSync(
    require.resolve('zigbee-herdsman/package.json'), 'utf8')).version;
  say('versions', {node: process.version, herdsman: version});

  let started = Date.now();
  let c = controller();
  const first = await within(c.start(), 'first start');
  say('start', {result: first, ms: Date.now() - started, formed: await formed()});
  await c.stop();

  started = Date.now();
  c = controller();
  const second = await within(c.start(), 'second start');
  say('restart', {result: second, ms: Date.now() - started, formed: await formed()});

  const interviewed = new Promise((resolve) => c.on('deviceInterview', (event) => {
    if (event.status === 'successful' || event.status === 'failed') resolve(event);
  }));
  started = Date.now();
  await c.permitJoin(60);
  await control({op: 'join', kind: 'plug', ieee: PLUG});
  const event = await within(interviewed, 'the interview');
  say('interview', {status: event.status, ieee: event.device.ieeeAddr,
                    model: event.device.modelID, manufacturer: event.device.manufacturerName,
                    ms: Date.now() - started});

  const endpoint = event.device.getEndpoint(1);
  const before = await within(endpoint.read('genOnOff', ['onOff']), 'read onOff');
  await within(endpoint.command('genOnOff', 'on', {}), 'command on');
  const after = await within(endpoint.read('genOnOff', ['onOff']), 'read onOff again');
  const state = (await control({op: 'device', ieee: PLUG})).state['1:in:on_off'];
  say('switch', {before: before.onOff, after: after.onOff, emulator: state.on_off});

  await c.permitJoin(0);
  await c.stop();
  say('stopped', {});
}

main().then(() => process.exit(0), (error) => {
  say('error', {message: String(error && error.stack || error)});
  process.exit(1);
});

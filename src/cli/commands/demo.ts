// isola demo: what `npm start` runs for now. Boots one micro-VM, shows that it has its own
// kernel, runs a small workload in it (a shell pipeline and a Node.js computation), measures an
// exec round trip, and tears everything down. Later the platform server takes this place.
import os from 'node:os';
import { MicroVmDriver } from '../../sandbox/drivers/microvm.js';
import { ms } from '../output.js';

export async function demo(_argv: string[]): Promise<number> {
  const say = (s: string) => process.stdout.write(`${s}\n`);
  const driver = new MicroVmDriver();
  const sandbox = await driver.create({ memoryMiB: 256, vcpus: 1 });
  try {
    say(`isola demo: starting micro-VM ${sandbox.id} ...`);
    await sandbox.start();
    const b = sandbox.boot;
    const r = sandbox.restore;
    if (b) {
      say(
        `booted with ${b.accel.toUpperCase()} in ${ms(b.totalMs)} (QEMU ${ms(b.qemuStartMs)}, kernel to init ${ms(b.kernelToInitMs)}, agent ${ms(b.agentStartMs)}; watchdog retries ${b.retries})`,
      );
    } else if (r) {
      say(
        `resumed from the cached snapshot of a booted guest in ${ms(r.totalMs)} (VMM ${ms(r.spawnMs)}, load ${ms(r.loadMs)}, resume ${ms(r.resumeMs)}); its own kernel all the same`,
      );
    }
    const info = await sandbox.info();
    say(`host kernel:  ${os.release()}`);
    say(`guest kernel: ${info.kernelRelease} (${info.kernelVersion})`);
    say(
      `guest: hostname ${info.hostname}, ${info.cpus} vCPU, ${Math.round(info.memTotalBytes / 2 ** 20)} MiB RAM, Node.js ${info.nodeVersion}, agent ${info.agentVersion}`,
    );
    const sh = await sandbox.run(['sh', '-c', 'echo "pid 1 is $(cat /proc/1/comm)"; uname -a; id']);
    say(`$ sh -c 'echo pid 1 ...; uname -a; id'  (exit ${sh.exitCode})`);
    for (const line of sh.stdout.trimEnd().split('\n')) say(`  ${line}`);
    const node = await sandbox.run([
      'node',
      '-e',
      "let p=0;for(let n=2;n<20000;n++){let q=1;for(let d=2;d*d<=n;d++)if(n%d===0){q=0;break}p+=q}console.log('primes below 20000: '+p)",
    ]);
    say(`$ node -e '<count primes>'  (exit ${node.exitCode})`);
    say(`  ${node.stdout.trim()}`);
    const times: number[] = [];
    for (let i = 0; i < 10; i++) {
      const t = performance.now();
      await sandbox.run(['true']);
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    say(`exec round trip of 'true': median ${ms(times[5]!)} over 10 runs`);
    await sandbox.stop();
    say('guest shut down; sandbox destroyed, nothing left behind.');
    return 0;
  } finally {
    await sandbox.destroy();
  }
}

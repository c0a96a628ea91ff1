// `isola` command-line entry: dispatches to one module per command (src/cli/commands/).
import { reportError } from './output.js';

const USAGE = `usage: isola <command> [options]

commands:
  demo                          boot a micro-VM, run a sample workload, print what happened
  doctor [--json] [--reprobe] [--reap]
                                check the host: accelerator, QEMU, guest assets, cgroups, network
  sandbox run [--memory MiB] [--vcpus N] [--env K=V]... [--json] -- CMD [ARGS...]
                                run a command in a fresh micro-VM with stdio attached
  image pull|import|export|ls|inspect|rm|prune|unpack|rootfs
                                OCI images: see \`isola image help\`
  run [--memory MiB] [-e K=V]... [-t] IMAGE [CMD [ARGS...]]
                                run an image in its own micro-VM (pulled when missing)
  help                          this text
`;

type Command = (argv: string[]) => Promise<number>;

// Commands load on demand: `isola image ls` need not load the VMM and the OCI runtime.
const COMMANDS: Record<string, Command> = {
  demo: async (argv) => (await import('./commands/demo.js')).demo(argv),
  doctor: async (argv) => (await import('./commands/doctor.js')).doctor(argv),
  image: async (argv) => (await import('./commands/image.js')).image(argv),
  run: async (argv) => (await import('./commands/run.js')).run(argv),
  sandbox: async (argv) => {
    if (argv[0] === 'run')
      return (await import('./commands/sandbox-run.js')).sandboxRun(argv.slice(1));
    process.stderr.write(USAGE);
    return 2;
  },
};

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(USAGE);
    return cmd ? 0 : 2;
  }
  const run = COMMANDS[cmd];
  if (!run) {
    process.stderr.write(`isola: unknown command "${cmd}"\n\n${USAGE}`);
    return 2;
  }
  return run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.exitCode = reportError(err, process.argv.includes('--json'));
  },
);

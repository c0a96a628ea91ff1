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

platform (server and client; the client finds the server and key from --url/--key,
ISOLA_URL/ISOLA_API_KEY, or the local server's admin key; admin keys pick a tenant with --tenant):
  serve [--listen HOST:PORT] [--data-dir DIR] [--database-url URL] [--image-store DIR]
                                run the platform server (SQLite in DIR, or PostgreSQL)
  tenant create|ls|get|limits|rm
                                tenants and their limits (admin)
  key create [--tenant NAME] | ls | revoke ID
                                API keys (shown once at creation)
  deploy NAME PATH_OR_IMAGE [--memory MiB] [--timeout S] [--concurrency N] [--max N] ...
                                deploy a Node.js bundle (dir, zip, tar) or an OCI image
  invoke NAME[:VERSION|:ALIAS] [--data JSON|@FILE|-]
                                call a function and print its result
  ls | info NAME | rm NAME... | versions NAME
                                functions and their versions
  alias set NAME ALIAS VERSION [--split V=PCT] | ls NAME | rm NAME ALIAS
                                aliases, traffic splits, rollback
  env ls|set|unset NAME ...     environment variables (each change is a new version)
  secret ls|set|rm NAME ...     encrypted secrets (never shown again)
  logs NAME [--follow] [--request ID]
                                function output, with request ids
  usage [--tenant NAME] [--since 24h]
                                invocations, duration and GB-seconds per tenant and function
  audit [--tenant NAME] [--action A] [--key-id ID] [--since 24h] [--limit N] [--before SEQ]
                                audit log of state-changing calls (admin)
`;

type Command = (argv: string[]) => Promise<number>;

// Commands load on demand: `isola image ls` need not load the VMM and the OCI runtime.
const COMMANDS: Record<string, Command> = {
  demo: async (argv) => (await import('./commands/demo.js')).demo(argv),
  doctor: async (argv) => (await import('./commands/doctor.js')).doctor(argv),
  image: async (argv) => (await import('./commands/image.js')).image(argv),
  run: async (argv) => (await import('./commands/run.js')).run(argv),
  serve: async (argv) => (await import('./commands/serve.js')).serve(argv),
  tenant: async (argv) => (await import('./commands/tenant.js')).tenant(argv),
  key: async (argv) => (await import('./commands/key.js')).key(argv),
  deploy: async (argv) => (await import('./commands/deploy.js')).deploy(argv),
  invoke: async (argv) => (await import('./commands/invoke.js')).invoke(argv),
  ls: async (argv) => (await import('./commands/functions.js')).ls(argv),
  info: async (argv) => (await import('./commands/functions.js')).info(argv),
  rm: async (argv) => (await import('./commands/functions.js')).rm(argv),
  versions: async (argv) => (await import('./commands/functions.js')).versions(argv),
  alias: async (argv) => (await import('./commands/alias.js')).alias(argv),
  env: async (argv) => (await import('./commands/env.js')).env(argv),
  secret: async (argv) => (await import('./commands/env.js')).secret(argv),
  logs: async (argv) => (await import('./commands/logs.js')).logs(argv),
  usage: async (argv) => (await import('./commands/usage.js')).usage(argv),
  audit: async (argv) => (await import('./commands/audit.js')).audit(argv),
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

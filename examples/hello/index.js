// isola's example function. Invoke it with a JSON event such as {"name": "Ada"}; over HTTP
// (/{tenant}/hello?name=Ada) the event is the request.
import os from 'node:os';

export default async (event, context) => {
  const name = event?.name ?? event?.query?.name ?? 'world';
  console.log(`greeting ${name} (request ${context.requestId})`);
  return {
    message: `Hello, ${name}!`,
    kernel: os.release(),
    hostname: os.hostname(),
    requestId: context.requestId,
  };
};

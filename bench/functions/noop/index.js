// The benchmark's trivial function: what is measured around it is the platform's own cost.
export default async (event) => ({ ok: true, n: event?.n ?? null });

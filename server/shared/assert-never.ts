/**
 * The default of a switch that handles every case of a union: `default: return assertNever(x);` fails
 * to compile when a case is added to the union and not to the switch.
 */
export function assertNever(value: never): never {
  throw new Error(`unexpected value: ${JSON.stringify(value)}`);
}

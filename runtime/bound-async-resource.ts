/**
 * Node 20's `AsyncResource.prototype.bind()` gives every function it binds a deprecated
 * `asyncResource` accessor (DEP0172) made of two `util.deprecate()` wrappers, each an
 * `Object.setPrototypeOf()` on a fresh function: new hidden classes in V8's old space on every call,
 * which keep what the bound function holds alive until the next full collection. `Http2Session.request()`
 * binds every request that way, and an endpoint opens a stream per tunnel: ~2.5 KiB of old space per
 * tunnel on the proxy and the redirector (bench/README.md, memory per connection).
 *
 * Node fixed it upstream (nodejs/node#58218: `deprecate()` no longer touches the prototype, v24) and
 * then dropped the property (#58618). `dropBoundAsyncResource()` installs the binding those versions
 * have — the same call in the resource's async scope, the same `length` — on a Node that still adds the
 * accessor; nothing in Underpass reads `asyncResource`, deprecated since Node 20.0.
 */
import { AsyncResource } from 'node:async_hooks';

type Bindable = (this: unknown, ...args: unknown[]) => unknown;

/** `fn` run in `resource`'s async scope, with `thisArg` or the caller's `this`: upstream's binding. */
function bindTo(resource: AsyncResource, fn: Bindable, thisArg: unknown): Bindable {
  if (typeof fn !== 'function') throw new TypeError('The "fn" argument must be of type function');
  const bound: Bindable =
    thisArg === undefined
      ? function (this: unknown, ...args: unknown[]): unknown {
          return resource.runInAsyncScope(fn, this, ...args);
        }
      : resource.runInAsyncScope.bind(resource, fn, thisArg);
  Object.defineProperty(bound, 'length', { configurable: true, enumerable: false, value: fn.length, writable: false });
  return bound;
}

/** Whether this Node's `bind()` adds the accessor. */
export function bindAddsAsyncResource(): boolean {
  return Object.prototype.hasOwnProperty.call(
    new AsyncResource('UnderpassProbe').bind(() => undefined),
    'asyncResource',
  );
}

/** Makes `AsyncResource.prototype.bind()` leave out the deprecated accessor, where this Node adds it. */
export function dropBoundAsyncResource(): void {
  if (!bindAddsAsyncResource()) return;
  (AsyncResource.prototype as unknown as { bind: (fn: Bindable, thisArg?: unknown) => Bindable }).bind = function (
    this: AsyncResource,
    fn: Bindable,
    thisArg?: unknown,
  ): Bindable {
    return bindTo(this, fn, thisArg);
  };
}

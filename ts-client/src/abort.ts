/**
 * One 'abort' listener per AbortSignal, however many streams and calls share it. Node warns
 * (MaxListenersExceededWarning) past ten listeners on one signal, but one signal for many
 * live streams (a request scope, a shutdown signal) is normal use, not a leak; and raising
 * the caller's own signal's limit would be reaching into an object that is not ours.
 */

interface Subscription {
  readonly listeners: Set<() => void>;
  readonly dispatch: () => void;
}

const subscriptions = new WeakMap<AbortSignal, Subscription>();

/** Calls `listener` once when `signal` aborts; returns the function that unsubscribes it. */
export function onAbort(signal: AbortSignal, listener: () => void): () => void {
  let subscription = subscriptions.get(signal);
  if (!subscription) {
    const listeners = new Set<() => void>();
    const dispatch = () => {
      subscriptions.delete(signal);
      // Over a copy, skipping any that an earlier one unsubscribed, as EventTarget does.
      for (const call of [...listeners]) if (listeners.has(call)) call();
    };
    subscription = { listeners, dispatch };
    subscriptions.set(signal, subscription);
    signal.addEventListener('abort', dispatch, { once: true });
  }
  const entry = () => listener(); // its own identity, so one function can subscribe twice
  const owner = subscription;
  owner.listeners.add(entry);
  return () => {
    if (!owner.listeners.delete(entry) || owner.listeners.size) return;
    if (subscriptions.get(signal) === owner) subscriptions.delete(signal);
    signal.removeEventListener('abort', owner.dispatch);
  };
}

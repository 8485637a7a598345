/** A tiny typed event emitter: browsers' EventTarget cannot type its payloads. */

export type Listener<T> = (value: T) => void;

export class Emitter<Events extends Record<string, unknown>> {
  private readonly listeners: { [K in keyof Events]?: Set<Listener<Events[K]>> } = {};

  /** Call `listener` for every `type` event; returns a function that removes it. */
  on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners[type];
    if (set === undefined) {
      set = new Set();
      this.listeners[type] = set;
    }
    set.add(listener);
    return () => this.off(type, listener);
  }

  off<K extends keyof Events>(type: K, listener: Listener<Events[K]>): void {
    this.listeners[type]?.delete(listener);
  }

  /** Call every listener; one that throws is reported and does not stop the others. */
  emit<K extends keyof Events>(type: K, value: Events[K]): void {
    for (const listener of [...(this.listeners[type] ?? [])]) {
      try {
        listener(value);
      } catch (error) {
        reportError(error);
      }
    }
  }
}

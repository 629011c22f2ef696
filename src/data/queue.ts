// The intrusive list every connection of a worker sits in: connecting, established, or waiting
// in its frontend's queue. Invariant: a connection links itself (prev/next/list), so adding,
// removing and taking the oldest are O(1) and allocate nothing, and an item is in at most one
// list at a time (`list` says which; removing it from another list is a no-op).

/** An element of an intrusive list: a connection links itself, so no node is allocated. */
export interface Linked<T> {
  prev: T | null;
  next: T | null;
  /** The list it is in, or null. */
  list: object | null;
}

/** Doubly linked intrusive list: O(1) add, append, remove and shift. */
export class LinkedList<T extends Linked<T>> {
  head: T | null = null;
  tail: T | null = null;
  size = 0;

  /** Puts `item` first (order does not matter to the timer sweep). */
  add(item: T): void {
    item.list = this;
    item.prev = null;
    item.next = this.head;
    if (this.head !== null) this.head.prev = item;
    else this.tail = item;
    this.head = item;
    this.size++;
  }

  /** Puts `item` last: with shift(), a FIFO queue. */
  push(item: T): void {
    item.list = this;
    item.next = null;
    item.prev = this.tail;
    if (this.tail !== null) this.tail.next = item;
    else this.head = item;
    this.tail = item;
    this.size++;
  }

  remove(item: T): void {
    if (item.list !== this) return;
    if (item.prev !== null) item.prev.next = item.next;
    else this.head = item.next;
    if (item.next !== null) item.next.prev = item.prev;
    else this.tail = item.prev;
    item.prev = null;
    item.next = null;
    item.list = null;
    this.size--;
  }

  /** Takes the first item out, or null when empty. */
  shift(): T | null {
    const item = this.head;
    if (item !== null) this.remove(item);
    return item;
  }
}

// Moving between portal pages. `go` is the one way the portal's scripts change page, so that
// the page's memory (keys.ts) can outlive a page change.

/**
 * Goes to another page of the portal.
 *
 * @param url - A local path, e.g. `/deliveries`.
 */
export function go(url: string): void {
  location.assign(url);
}

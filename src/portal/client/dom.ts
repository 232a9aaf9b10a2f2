// The pages' DOM and request helpers.

/**
 * @param id - An element id from our own templates.
 * @returns The element, typed as the template makes it (so the type parameter is only a cast), or null.
 */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters
export const byId = <T extends HTMLElement>(id: string): T | null => document.getElementById(id) as T | null;

/**
 * Posts JSON to the portal with the page's CSRF token in its header (the double-submit the
 * server checks on every JSON route).
 *
 * @param url - A portal path.
 * @param csrf - The token the page was rendered with.
 * @param body - What to send.
 * @returns The answer.
 */
export function postJson(url: string, csrf: string, body: unknown): Promise<Response> {
  return fetch(url, { method: "POST", credentials: "same-origin", headers: { "content-type": "application/json", "x-csrf-token": csrf }, body: JSON.stringify(body) });
}

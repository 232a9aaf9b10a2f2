// Moving between portal pages without reloading, so that the page's memory (keys.ts: U) lasts
// the whole visit. A portal page is fetched and its body, title and language swapped in; links,
// GET forms, the language switch and back/forward go this way. Anything that is not a portal
// page (another origin, a file, a server fault, the login page after the session ended) is
// left to the browser: a full navigation, which drops U with the page.
import { forgetIdentity } from "./keys.js";

/** What runs on each page once its content is in place (main.ts's initPage). */
let setup: () => void = () => undefined;

/** Counts page changes, so that only the newest one is rendered when several overlap. */
let latest = 0;

/** The address of the content shown, without its #fragment (a hash change is no page change). */
let shown = withoutHash(location.href);

function withoutHash(url: string): string {
  const u = new URL(url);
  u.hash = "";
  return u.href;
}

/**
 * Registers the per-page setup and starts handling links, forms and back/forward. main.ts
 * calls it once, with the setup it runs for the first page too.
 *
 * @param init - Wires up the page now in the document (by element ids).
 */
export function onPage(init: () => void): void {
  setup = init;
  document.addEventListener("click", onClick);
  document.addEventListener("submit", onSubmit);
  addEventListener("popstate", () => {
    if (withoutHash(location.href) !== shown) void change(location.href, "pop");
    // Back to the page still shown, while another was loading: that one is no longer wanted.
    else latest++;
  });
  // A page the browser restores from its back/forward cache is asked from the server again,
  // so that it shows nothing a session that ended would not (and holds no U).
  addEventListener("pageshow", (ev) => {
    if (ev.persisted) location.reload();
  });
}

/**
 * Goes to another page of the portal, keeping this page's memory when the server answers with
 * a portal page.
 *
 * @param url - A local path, e.g. `/deliveries`.
 */
export function go(url: string): void {
  void change(url, "push");
}

/** Paths the browser must load itself: assets, the practice's look, files, wraps and the logout. */
function ownedByBrowser(u: URL): boolean {
  return /^\/(static|look)(\/|$)|^\/logout$|\/files\/|\/wrap$/.test(u.pathname);
}

function onClick(ev: MouseEvent): void {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = ev.target instanceof Element ? ev.target.closest("a") : null;
  if (!a?.hasAttribute("href") || a.hasAttribute("download") || (a.target !== "" && a.target !== "_self")) return;
  const u = new URL(a.href);
  if ((u.protocol !== "http:" && u.protocol !== "https:") || u.origin !== location.origin || ownedByBrowser(u)) return;
  // A link within this page (the skip link) stays the browser's.
  if (u.hash !== "" && withoutHash(u.href) === shown) return;
  ev.preventDefault();
  go(u.href);
}

function onSubmit(ev: SubmitEvent): void {
  const form = ev.target;
  if (ev.defaultPrevented || !(form instanceof HTMLFormElement)) return;
  if (form.action.endsWith("/logout")) {
    // Logging out ends the visit: U goes, and the browser loads the next page itself.
    forgetIdentity();
    return;
  }
  const u = new URL(form.action);
  if (u.origin !== location.origin || (form.target !== "" && form.target !== "_self")) return;
  const fields = new URLSearchParams(Array.from(new FormData(form, ev.submitter), ([k, v]) => [k, typeof v === "string" ? v : v.name]));
  if (form.method === "get") {
    ev.preventDefault();
    u.search = fields.toString();
    go(u.href);
  } else if (form.id === "lang-form") {
    // The language switch of a logged-in patient: posted here, so that U stays; the server
    // answers with the page it came from, now in the new language.
    ev.preventDefault();
    void change(u.href, "push", { method: "POST", body: fields }, () => {
      form.submit();
    });
  }
}

/**
 * Fetches `url` and shows it, or leaves it to the browser.
 *
 * @param url - Where to go.
 * @param how - "push" adds a history entry, "pop" follows back/forward (the address is already there).
 * @param init - A POST's method and body.
 * @param fallback - What to do instead when the answer is not a portal page (default: load it).
 */
async function change(url: string, how: "push" | "pop", init: RequestInit = {}, fallback?: () => void): Promise<void> {
  const n = ++latest;
  const leave = (to: string): void => {
    if (fallback) fallback();
    else if (how === "pop") location.replace(to);
    else location.assign(to);
  };
  let res: Response;
  let html: string;
  try {
    res = await fetch(url, { ...init, credentials: "same-origin", headers: { accept: "text/html" } });
    html = res.status >= 500 || !(res.headers.get("content-type") ?? "").startsWith("text/html") ? "" : await res.text();
  } catch {
    // Another origin (the CSP refuses it), or no network.
    if (n === latest) leave(url);
    return;
  }
  if (n !== latest) return;
  const to = new URL(res.url);
  if (res.redirected && to.pathname === "/login" && new URL(url, location.href).pathname !== "/login") {
    // The session ended: U ends with it.
    forgetIdentity();
    location.assign(to.href);
    return;
  }
  const doc = new DOMParser().parseFromString(html, "text/html");
  if (!doc.querySelector("main#main") || !doc.querySelector('script[src="/static/app.js"]')) {
    leave(url);
    return;
  }
  // The #fragment (a level-2 link's key) stays with its page: the one asked for, or this one
  // when the answer is this page again (the language switch).
  to.hash = new URL(url, location.href).hash || (withoutHash(to.href) === shown ? location.hash : "");
  if (how === "push") history.pushState(null, "", to.href);
  else if (to.href !== location.href) history.replaceState(null, "", to.href);
  shown = withoutHash(to.href);
  show(doc);
}

/** Puts the fetched page in place of this one and tells screen readers. */
function show(doc: Document): void {
  document.title = doc.title;
  for (const name of ["lang", "dir"]) document.documentElement.setAttribute(name, doc.documentElement.getAttribute(name) ?? "");
  document.body.replaceWith(document.adoptNode(doc.body));
  scrollTo(0, 0);
  // Focus moves to the new page's heading, which a screen reader then reads out.
  const h1 = document.querySelector<HTMLElement>("main h1");
  if (h1) {
    h1.tabIndex = -1;
    h1.focus({ preventScroll: true });
  }
  setup();
}

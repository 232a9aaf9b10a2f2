// The pages' one DOM helper.

/**
 * @param id - An element id from our own templates.
 * @returns The element, typed as the template makes it (so the type parameter is only a cast), or null.
 */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters
export const byId = <T extends HTMLElement>(id: string): T | null => document.getElementById(id) as T | null;

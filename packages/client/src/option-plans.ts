// The plans over the negotiation record: which options go() and listMetaContexts()
// send, one at a time, each decided from the record as the options before it left it.
import { NbdStateError, NbdUnsupportedError, Option } from '@nbd/protocol';
import { makeExportInfo } from './export-info.js';
import type { AnyStepCall, Negotiation } from './option-engine.js';

/** What go() asks for. */
export interface GoWants {
  name: string;
  structured: boolean;
  extended: boolean;
  metaContexts: readonly string[];
}

/**
 * The options go() sends, one at a time: each is decided from the record as the
 * previous ones left it. Ends with the record in phase 'transmission' (oldstyle
 * servers need no option at all). Throws for what the server's style cannot do.
 */
export function* goSteps(n: Negotiation, w: GoWants): Generator<AnyStepCall, void, void> {
  if (n.style === 'oldstyle') {
    if (w.name !== '') throw new NbdUnsupportedError(`an oldstyle server has no export names (asked for "${w.name}")`);
    if (w.metaContexts.length > 0) throw new NbdUnsupportedError('an oldstyle server cannot negotiate meta contexts');
    if (w.extended) throw new NbdUnsupportedError('an oldstyle server cannot negotiate extended headers');
    n.export = makeExportInfo('', n.oldstyle!.size, n.oldstyle!.flags);
    n.phase = 'transmission';
    return;
  }
  if (n.style === 'newstyle') {
    if (w.metaContexts.length > 0 || w.extended) {
      throw new NbdUnsupportedError(
        'the server is not fixed-newstyle: only NBD_OPT_EXPORT_NAME is possible (no meta contexts, no extended headers)',
      );
    }
    yield { kind: 'export-name', args: { name: w.name } };
    return;
  }
  if (w.extended && !n.extended && !n.refused.has(Option.EXTENDED_HEADERS)) yield { kind: 'extended-headers', args: undefined };
  if (w.structured || w.extended) {
    if (!n.structured && !n.refused.has(Option.STRUCTURED_REPLY)) yield { kind: 'structured-reply', args: undefined };
  } else if (n.structured) throw new NbdStateError('structured replies were already negotiated; cannot go() without them');
  if (w.metaContexts.length > 0) {
    if (!n.structured) throw new NbdUnsupportedError('the server refused structured replies, so meta contexts cannot be used');
    yield { kind: 'set-meta-context', args: { name: w.name, queries: w.metaContexts } };
  }
  if (!n.refused.has(Option.GO)) yield { kind: 'go', args: { name: w.name } };
  // GO refused with ERR_UNSUP: the old way in. Meta contexts set before it still apply (nbd-server-style servers).
  if (n.phase !== 'transmission') yield { kind: 'export-name', args: { name: w.name } };
}

/**
 * What listMetaContexts() sends before NBD_OPT_LIST_META_CONTEXT: servers (nbdkit, qemu)
 * answer meta-context options only once structured replies are on.
 */
export function* beforeListMetaContext(n: Negotiation): Generator<AnyStepCall, void, void> {
  if (!n.structured && !n.refused.has(Option.STRUCTURED_REPLY)) yield { kind: 'structured-reply', args: undefined };
}

/** The meta contexts selected for `name`, if the last SET_META_CONTEXT named it and `asked` any. */
export function selectedContexts(n: Negotiation, name: string, asked: readonly string[]): Map<string, number> {
  return asked.length > 0 && n.metaContextsFor === name ? new Map(n.metaContexts) : new Map();
}

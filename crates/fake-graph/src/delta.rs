//! Delta (`docs/onedrive.md`, Delta and resync).
//!
//! * A round starts with `root/delta` (full enumeration), a deltaLink token (changes since), `token=latest`
//!   (no items, just a current deltaLink) or, on business drives, a timestamp token.
//! * The round is computed and rendered once, at its first request, and paged with `@odata.nextLink`; the
//!   last page carries `@odata.deltaLink`. Changes made while a client pages appear in the next round.
//! * Each item appears once per round with its latest state; parents come before children (sorted by depth
//!   then path), the ancestor chain of every changed item is included (business style, A14, both flavours),
//!   deletions come last. Delta items have no `parentReference.path`; business omits `cTag`.
//! * deltaLink tokens are stateless (they encode the change sequence), so a stored deltaLink can be used any
//!   number of times: each use returns everything changed since it was issued. Tokens from another server
//!   instance, tokens issued before [`Faults::invalidate_delta_tokens`](crate::Faults::invalidate_delta_tokens),
//!   tokens older than `delta_token_max_age`, nextLinks of forgotten rounds, and the request after
//!   [`Faults::delta_resync_next`](crate::Faults::delta_resync_next) answer `410 Gone` with
//!   `resyncRequired` (inner code configurable, A13) and a `Location` to a fresh enumeration. A token that
//!   cannot be decoded at all answers `400 invalidRequest`.
//! * Delta on a non-root folder: personal only (A15); business answers `400 notSupported`. Items moved out
//!   of a folder are not reported by that folder's delta (not modelled).

use base64::Engine as _;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::GraphError;
use crate::graph::{apply_select, qget, select_of};
use crate::model::{Drive, Tombstone};
use crate::state::State;
use crate::util;

struct Round {
    drive: usize,
    scope: String,
    pages: Vec<Vec<Value>>,
    end_seq: u64,
    size: usize,
}

#[derive(Default)]
pub(crate) struct DeltaState {
    pub epoch: u64,
    rounds: HashMap<String, Round>,
    order: VecDeque<String>,
    stored: usize,
}

const MAX_ROUNDS: usize = 64;
const MAX_STORED_VALUES: usize = 200_000;

enum Tok {
    Initial,
    Latest,
    Since { seq: u64, issued: u64 },
    Time(SystemTime),
    Page { round: String, page: usize },
}

fn enc(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Ancestors of `id` up to and including `scope` (nearest first); empty if `id` is `scope`.
fn chain_to(d: &Drive, id: &str, scope: &str) -> Vec<String> {
    let mut out = Vec::new();
    if id == scope {
        return out;
    }
    for a in d.ancestors(id) {
        let stop = a == scope;
        out.push(a);
        if stop {
            break;
        }
    }
    out
}

/// Live items changed after `since` (plus ancestor chains) and tombstones after `since`, within `scope`.
fn changes_since(d: &Drive, scope: &str, since: u64) -> (Vec<String>, Vec<Tombstone>) {
    let mut set: HashSet<String> = HashSet::new();
    for (id, it) in &d.items {
        if it.change_seq > since && d.is_within(id, scope) {
            set.insert(id.clone());
            set.extend(chain_to(d, id, scope));
        }
    }
    let scoped = |t: &Tombstone| scope == d.root_id || t.ancestors.iter().any(|a| a == scope);
    let tombs: Vec<Tombstone> = d
        .tombstones
        .iter()
        .filter(|t| t.seq > since && scoped(t))
        .cloned()
        .collect();
    for t in &tombs {
        if let Some(p) = &t.parent_id {
            if d.items.contains_key(p) && d.is_within(p, scope) {
                set.insert(p.clone());
                set.extend(chain_to(d, p, scope));
            }
        }
    }
    let mut live: Vec<(usize, String, String)> = set
        .into_iter()
        .map(|id| (d.depth(&id), d.path_string(&id).to_lowercase(), id))
        .collect();
    live.sort();
    (live.into_iter().map(|(_, _, id)| id).collect(), tombs)
}

impl State {
    fn d_token(&self, seq: u64, now: SystemTime) -> String {
        enc(&format!("d.{}.{}.{seq}.{}", self.instance, self.delta.epoch, unix(now)))
    }

    fn n_token(&self, round: &str, page: usize) -> String {
        enc(&format!("n.{}.{}.{round}.{page}", self.instance, self.delta.epoch))
    }

    fn parse_token(&self, t: Option<&str>, personal: bool) -> Result<Result<Tok, &'static str>, GraphError> {
        let Some(t) = t.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Ok(Tok::Initial));
        };
        if t.eq_ignore_ascii_case("latest") {
            return Ok(Ok(Tok::Latest));
        }
        if let Some(time) = util::parse_time(t) {
            if personal {
                return Err(GraphError::invalid(
                    "Timestamp delta tokens are only supported on OneDrive for Business and SharePoint",
                ));
            }
            return Ok(Ok(Tok::Time(time)));
        }
        let bad = || GraphError::invalid("The delta token is malformed").inner("invalidDeltaToken");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t)
            .map_err(|_| bad())?;
        let s = String::from_utf8(raw).map_err(|_| bad())?;
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != 5 || !(parts[0] == "d" || parts[0] == "n") {
            return Err(bad());
        }
        if parts[1] != self.instance {
            return Ok(Err("the token was issued by another server instance"));
        }
        if parts[2].parse::<u64>().ok() != Some(self.delta.epoch) {
            return Ok(Err("the token was invalidated"));
        }
        if parts[0] == "d" {
            let seq = parts[3].parse().map_err(|_| bad())?;
            let issued = parts[4].parse().map_err(|_| bad())?;
            Ok(Ok(Tok::Since { seq, issued }))
        } else {
            let page = parts[4].parse().map_err(|_| bad())?;
            Ok(Ok(Tok::Page {
                round: parts[3].to_string(),
                page,
            }))
        }
    }

    /// `GET …/delta` for folder `scope` of drive `di`.
    pub(crate) fn delta(
        &mut self,
        di: usize,
        scope: &str,
        q: &[(String, String)],
        now: SystemTime,
    ) -> Result<Value, GraphError> {
        let d = &self.drives[di];
        if !d.items[scope].is_folder() {
            return Err(GraphError::invalid("Delta is only supported on folders"));
        }
        if scope != d.root_id && !d.personal {
            return Err(GraphError::not_supported("view.delta can only be called on the root."));
        }
        let top = match qget(q, "$top") {
            None => self.cfg.delta_page_size.clamp(1, 1000),
            Some(t) => match t.trim().parse::<usize>() {
                Ok(n) if n >= 1 => n.min(1000),
                _ => return Err(GraphError::invalid(format!("Invalid $top value '{t}'"))),
            },
        };
        let select = select_of(q);
        let base_path = if scope == d.root_id {
            format!("{}/drives/{}/root/delta", self.graph_base(), util::encode_query(&d.id))
        } else {
            format!(
                "{}/drives/{}/items/{}/delta",
                self.graph_base(),
                util::encode_query(&d.id),
                util::encode_query(scope)
            )
        };
        let link = |token: Option<&str>| {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            for (k, v) in q
                .iter()
                .filter(|(k, _)| k == "$select" || k == "$top" || k == "$expand")
            {
                ser.append_pair(k, v);
            }
            if let Some(t) = token {
                ser.append_pair("token", t);
            }
            let qs = ser.finish();
            if qs.is_empty() {
                base_path.clone()
            } else {
                format!("{base_path}?{qs}")
            }
        };
        let tok = match self.parse_token(qget(q, "token"), d.personal)? {
            Ok(t) => t,
            Err(why) => return Err(self.resync(&link(None), why)),
        };
        let carries_token = matches!(tok, Tok::Since { .. } | Tok::Page { .. } | Tok::Time(_));
        if carries_token && self.faults.delta_resync_next > 0 {
            self.faults.delta_resync_next -= 1;
            return Err(self.resync(&link(None), "resync injected"));
        }
        let since = match tok {
            Tok::Latest => {
                let t = self.d_token(self.drives[di].seq, now);
                return Ok(json!({ "value": [], "@odata.deltaLink": link(Some(&t)) }));
            }
            Tok::Page { round, page } => {
                if let Some((n, status)) = self.faults.fail_delta_pages.filter(|(n, _)| *n > 0) {
                    self.faults.fail_delta_pages = Some((n - 1, status));
                    self.stats.injected_failures += 1;
                    return Err(GraphError::new(
                        status,
                        "generalException",
                        "An unspecified error has occurred.",
                    ));
                }
                let ok = self
                    .delta
                    .rounds
                    .get(&round)
                    .is_some_and(|r| r.drive == di && r.scope == scope && page < r.pages.len());
                if !ok {
                    return Err(self.resync(&link(None), "the delta round has expired"));
                }
                return Ok(self.delta_page(&round, page, &link, now));
            }
            Tok::Since { seq, issued } => {
                if let Some(max) = self.cfg.delta_token_max_age {
                    let age = Duration::from_secs(unix(now).saturating_sub(issued));
                    if age > max {
                        return Err(self.resync(&link(None), "the delta token has expired"));
                    }
                }
                Some(seq)
            }
            Tok::Time(t) => {
                let d = &self.drives[di];
                Some(
                    d.seq_log
                        .iter()
                        .take_while(|(_, at)| *at <= t)
                        .last()
                        .map(|(s, _)| *s)
                        .unwrap_or(0),
                )
            }
            Tok::Initial => None,
        };
        // Compute and render the round.
        let d = &self.drives[di];
        let end_seq = d.seq;
        let (live, tombs) = match since {
            None => (d.subtree(scope), Vec::new()),
            Some(s) => changes_since(d, scope, s),
        };
        let mut values = Vec::with_capacity(live.len() + tombs.len());
        for id in &live {
            let v = self.render_item(di, id, true, now);
            values.push(apply_select(v, select.as_deref()));
        }
        for t in &tombs {
            let v = self.drives[di].render_tombstone(t);
            values.push(apply_select(v, select.as_deref()));
        }
        let size = values.len();
        let mut pages: Vec<Vec<Value>> = Vec::new();
        let mut it = values.into_iter().peekable();
        while it.peek().is_some() {
            pages.push(it.by_ref().take(top).collect());
        }
        if pages.is_empty() {
            pages.push(Vec::new());
        }
        let round_id = util::random_token(12);
        self.delta.rounds.insert(
            round_id.clone(),
            Round {
                drive: di,
                scope: scope.to_string(),
                pages,
                end_seq,
                size,
            },
        );
        self.delta.order.push_back(round_id.clone());
        self.delta.stored += size;
        while self.delta.order.len() > 1
            && (self.delta.order.len() > MAX_ROUNDS || self.delta.stored > MAX_STORED_VALUES)
        {
            if let Some(old) = self.delta.order.pop_front() {
                if let Some(r) = self.delta.rounds.remove(&old) {
                    self.delta.stored -= r.size;
                }
            }
        }
        Ok(self.delta_page(&round_id, 0, &link, now))
    }

    fn delta_page(&self, round: &str, page: usize, link: &dyn Fn(Option<&str>) -> String, now: SystemTime) -> Value {
        let r = &self.delta.rounds[round];
        let mut v = json!({ "value": r.pages[page] });
        if page + 1 < r.pages.len() {
            v["@odata.nextLink"] = json!(link(Some(&self.n_token(round, page + 1))));
        } else {
            v["@odata.deltaLink"] = json!(link(Some(&self.d_token(r.end_seq, now))));
        }
        v
    }

    fn resync(&self, location: &str, why: &str) -> GraphError {
        GraphError::new(
            410,
            "resyncRequired",
            format!("Resync required ({why}). Replace any local items with the server's version (including deletes) if you're sure that the service was up to date with your local changes when you last sync'd. Upload any local changes that the server doesn't know about."),
        )
        .inner(&self.cfg.resync_inner_code)
        .header("Location", location)
    }
}

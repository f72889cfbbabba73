//! A lead's cache of condition results: plain data kept on the lead, so the
//! model needs nothing of CEL (the conditions live in `cel`, which fills it).

/// A lead's cache of condition results. Each result is stamped with a change
/// counter; it is valid while none of the lead fields the condition reads has
/// changed since (and for the same ruleset).
#[derive(Clone, Debug, Default)]
pub struct ConditionCache {
    rules: u64,
    counter: u32,
    /// Per field bit: the counter when it last changed.
    changed_at: [u32; 16],
    results: Vec<Option<(bool, u32)>>,
}

/// A cache never makes two leads different: it only remembers answers the
/// lead's fields already determine.
impl PartialEq for ConditionCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl ConditionCache {
    pub fn touched(&mut self, fields: u16) {
        self.counter += 1;
        for (bit, at) in self.changed_at.iter_mut().enumerate() {
            if fields & (1 << bit) != 0 {
                *at = self.counter;
            }
        }
    }

    /// The cached result in `slot` for `rules`, if none of the fields in
    /// `read` (bits of `cel::fields`) changed since it was stored.
    pub fn get(&self, rules: u64, slot: Option<usize>, read: u16) -> Option<bool> {
        let slot = slot?;
        if self.rules != rules {
            return None;
        }
        let (value, stamp) = (*self.results.get(slot)?)?;
        let fresh = self
            .changed_at
            .iter()
            .enumerate()
            .all(|(bit, at)| read & (1 << bit) == 0 || *at <= stamp);
        fresh.then_some(value)
    }

    pub fn put(&mut self, rules: u64, slot: Option<usize>, value: bool) {
        let Some(slot) = slot else { return };
        if self.rules != rules {
            self.rules = rules;
            self.results.clear();
        }
        if self.results.len() <= slot {
            self.results.resize(slot + 1, None);
        }
        self.results[slot] = Some((value, self.counter));
    }
}

//! How CEL sees leads and events: lazy views that borrow the engine's own
//! data and make a field's value only when a condition reads it.
//!
//! Converting a whole lead into CEL values for every condition cost more than
//! evaluating the conditions; these views make a lookup of `lead.score` one
//! small allocation and `lead.attributes.industry` none beyond its wrapper.

use crate::model::{Event, LeadState};
use cel::common::traits::{Container, Indexer, Sizer};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelNull, CelString, CelTimestamp, CelUInt, Type, MAP_TYPE,
};
use cel::common::value::{CowVal, Val};
use cel::ExecutionError;
use serde_json::{Map, Value as Json};

/// Leads, events and attribute objects all look like maps to CEL.
static VIEW_TYPE: Type = MAP_TYPE;

fn field(idx: &dyn Val) -> Result<&str, ExecutionError> {
    idx.downcast_ref::<CelString>()
        .map(|s| s.inner())
        .ok_or_else(|| ExecutionError::UnexpectedType {
            got: idx.get_type().name().to_owned(),
            want: "string".to_owned(),
        })
}

fn string<'b, 'v>(s: &'v str) -> CowVal<'b, 'v> {
    CowVal::owned(CelString::from(s))
}

fn timestamp<'b, 'v>(t: &crate::model::time::Timestamp) -> CowVal<'b, 'v> {
    CowVal::owned(CelTimestamp::from(t.fixed_offset()))
}

/// A JSON value as CEL sees it; strings are borrowed, objects stay lazy.
pub fn json<'b, 'v>(v: &'v Json) -> CowVal<'b, 'v> {
    match v {
        Json::Null => CowVal::owned(CelNull),
        Json::Bool(b) => CowVal::owned(CelBool::from(*b)),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => CowVal::owned(CelInt::from(i)),
            (None, Some(u)) => CowVal::owned(CelUInt::from(u)),
            _ => CowVal::owned(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => string(s),
        Json::Object(m) => CowVal::owned(ObjectView(m)),
        // Lists are rare in conditions: convert them whole.
        Json::Array(_) => CowVal::Owned(
            cel::Value::try_into(super::json_to_cel(v))
                .unwrap_or_else(|_| Box::new(CelNull) as Box<dyn Val>),
        ),
    }
}

macro_rules! map_like {
    ($ty:ident) => {
        impl<'a> Val for $ty<'a> {
            fn get_type(&self) -> &Type {
                &VIEW_TYPE
            }
            fn cel_type() -> &'static Type
            where
                Self: Sized,
            {
                &VIEW_TYPE
            }
            fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
            where
                Self: 'v,
            {
                Some(self)
            }
            fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
            where
                Self: 'v,
            {
                Box::new($ty(self.0))
            }
        }
    };
}

/// `lead`.
#[derive(Debug)]
pub struct LeadView<'a>(pub &'a LeadState);
map_like!(LeadView);

impl Indexer for LeadView<'_> {
    fn get<'b, 'v>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        let l: &'v LeadState = self.0;
        Ok(match field(idx)? {
            "id" => string(&l.id),
            "email" => string(&l.email),
            "score" => CowVal::owned(CelInt::from(l.score)),
            "fit" => CowVal::owned(CelInt::from(l.fit)),
            "stage" => string(l.stage.as_str()),
            "owner" => string(l.owner.as_deref().unwrap_or("")),
            "consent" => string(l.consent.as_str()),
            "attributes" => CowVal::owned(ObjectView(&l.attributes)),
            "created_at" => timestamp(&l.created_at),
            "last_activity_at" => timestamp(&l.last_activity_at),
            // How often sales recycled the lead: its nurture cycle.
            "recycled_count" => CowVal::owned(CelInt::from(i64::from(l.cycle))),
            other => return Err(ExecutionError::no_such_key(other)),
        })
    }

    fn steal<'v>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(idx).map(CowVal::into_owned)
    }
}

/// `event`.
#[derive(Debug)]
pub struct EventView<'a>(pub &'a Event);
map_like!(EventView);

impl Indexer for EventView<'_> {
    fn get<'b, 'v>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        let e: &'v Event = self.0;
        Ok(match field(idx)? {
            "id" => string(&e.id),
            "type" => string(&e.kind),
            "lead" => string(&e.lead),
            "at" => timestamp(&e.at),
            "properties" => CowVal::owned(ObjectView(&e.properties)),
            "traits" => CowVal::owned(ObjectView(&e.traits)),
            other => return Err(ExecutionError::no_such_key(other)),
        })
    }

    fn steal<'v>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(idx).map(CowVal::into_owned)
    }
}

/// A JSON object (attributes, properties, traits).
#[derive(Debug)]
pub struct ObjectView<'a>(pub &'a Map<String, Json>);

impl<'a> Val for ObjectView<'a> {
    fn get_type(&self) -> &Type {
        &VIEW_TYPE
    }
    fn cel_type() -> &'static Type
    where
        Self: Sized,
    {
        &VIEW_TYPE
    }
    fn as_indexer<'b, 'v>(&'b self) -> Option<&'b (dyn Indexer + 'v)>
    where
        Self: 'v,
    {
        Some(self)
    }
    fn as_container(&self) -> Option<&dyn Container> {
        Some(self)
    }
    fn as_sizer(&self) -> Option<&dyn Sizer> {
        Some(self)
    }
    fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v>
    where
        Self: 'v,
    {
        Box::new(ObjectView(self.0))
    }
}

impl Indexer for ObjectView<'_> {
    fn get<'b, 'v>(&'b self, idx: &dyn Val) -> Result<CowVal<'b, 'v>, ExecutionError>
    where
        Self: 'v,
    {
        let key = field(idx)?;
        let map: &'v Map<String, Json> = self.0;
        match map.get(key) {
            Some(v) => Ok(json(v)),
            None => Err(ExecutionError::no_such_key(key)),
        }
    }

    fn steal<'v>(self: Box<Self>, idx: &dyn Val) -> Result<Box<dyn Val + 'v>, ExecutionError>
    where
        Self: 'v,
    {
        self.get(idx).map(CowVal::into_owned)
    }
}

/// `"key" in lead.attributes`.
impl Container for ObjectView<'_> {
    fn contains(&self, value: &dyn Val) -> Result<bool, ExecutionError> {
        Ok(value
            .downcast_ref::<CelString>()
            .is_some_and(|k| self.0.contains_key(k.inner())))
    }
}

impl Sizer for ObjectView<'_> {
    fn size(&self) -> CelInt {
        CelInt::from(self.0.len() as i64)
    }
}

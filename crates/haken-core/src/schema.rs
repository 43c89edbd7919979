//! The user profile schema (`/api/v1/meta/schemas/user/default`): Okta's base attributes plus
//! custom attributes an administrator adds. Every profile written through the API or a hook
//! is validated here, so a profile only ever holds attributes the schema has.

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::time::Timestamp;

/// Value types a custom attribute may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    String,
    Number,
    Integer,
    Boolean,
    Array,
}

impl AttrType {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => AttrType::String,
            "number" => AttrType::Number,
            "integer" => AttrType::Integer,
            "boolean" => AttrType::Boolean,
            "array" => AttrType::Array,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttrType::String => "string",
            AttrType::Number => "number",
            AttrType::Integer => "integer",
            AttrType::Boolean => "boolean",
            AttrType::Array => "array",
        }
    }

    fn accepts(self, v: &Value) -> bool {
        match self {
            AttrType::String => v.is_string(),
            AttrType::Number => v.is_number(),
            AttrType::Integer => v.is_i64() || v.is_u64(),
            AttrType::Boolean => v.is_boolean(),
            AttrType::Array => v.is_array(),
        }
    }
}

/// One attribute of the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub name: String,
    pub title: String,
    pub description: Option<String>,
    pub kind: AttrType,
    /// For arrays: the element type.
    pub items: Option<AttrType>,
    pub required: bool,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub enumeration: Option<Vec<Value>>,
    pub email_format: bool,
}

impl Attribute {
    fn string(name: &str, title: &str, required: bool, min: Option<u64>, max: Option<u64>) -> Self {
        Attribute {
            name: name.to_owned(),
            title: title.to_owned(),
            description: None,
            kind: AttrType::String,
            items: None,
            required,
            min_length: min,
            max_length: max,
            enumeration: None,
            email_format: false,
        }
    }

    fn to_json(&self, base: bool) -> Value {
        let mut m = Map::new();
        m.insert("title".into(), json!(self.title));
        if let Some(d) = &self.description {
            m.insert("description".into(), json!(d));
        }
        m.insert("type".into(), json!(self.kind.as_str()));
        if let Some(items) = self.items {
            m.insert("items".into(), json!({ "type": items.as_str() }));
        }
        if self.required {
            m.insert("required".into(), json!(true));
        }
        if let Some(v) = self.min_length {
            m.insert("minLength".into(), json!(v));
        }
        if let Some(v) = self.max_length {
            m.insert("maxLength".into(), json!(v));
        }
        if let Some(e) = &self.enumeration {
            m.insert("enum".into(), Value::Array(e.clone()));
        }
        if self.email_format {
            m.insert("format".into(), json!("email"));
        }
        m.insert("mutability".into(), json!("READ_WRITE"));
        m.insert("scope".into(), json!("NONE"));
        m.insert("permissions".into(), json!([{ "principal": "SELF", "action": "READ_WRITE" }]));
        if base && self.name == "login" {
            m.insert("pattern".into(), json!(".+"));
            m.insert("unique".into(), json!("UNIQUE_VALIDATED"));
        }
        if !base {
            m.insert("master".into(), json!({ "type": "PROFILE_MASTER" }));
        }
        Value::Object(m)
    }

    /// Reads a custom attribute definition as an administrator posts it.
    pub fn from_definition(name: &str, def: &Value) -> Result<Self, ApiError> {
        let field = format!("definitions.custom.properties.{name}");
        if !valid_attribute_name(name) {
            return Err(ApiError::validation(
                &field,
                "attribute names start with a letter and hold only letters, digits and underscores (at most 100 characters)",
            ));
        }
        let Some(obj) = def.as_object() else {
            return Err(ApiError::validation(&field, "must be an object"));
        };
        let kind = obj.get("type").and_then(Value::as_str).and_then(AttrType::parse).ok_or_else(|| {
            ApiError::validation(&format!("{field}.type"), "must be one of string, number, integer, boolean, array")
        })?;
        let items = match kind {
            AttrType::Array => Some(
                obj.get("items")
                    .and_then(|i| i.get("type"))
                    .and_then(Value::as_str)
                    .map(|t| {
                        AttrType::parse(t).filter(|t| *t != AttrType::Array).ok_or_else(|| {
                            ApiError::validation(
                                &format!("{field}.items.type"),
                                "must be string, number, integer or boolean",
                            )
                        })
                    })
                    .transpose()?
                    .unwrap_or(AttrType::String),
            ),
            _ => None,
        };
        let title = match obj.get("title") {
            Some(Value::String(t)) if !t.trim().is_empty() => t.clone(),
            _ => return Err(ApiError::validation(&format!("{field}.title"), "is required")),
        };
        let num = |k: &str| -> Result<Option<u64>, ApiError> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .map(Some)
                    .ok_or_else(|| ApiError::validation(&format!("{field}.{k}"), "must be a non-negative integer")),
            }
        };
        let enumeration = match obj.get("enum") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => return Err(ApiError::validation(&format!("{field}.enum"), "must be an array")),
        };
        Ok(Attribute {
            name: name.to_owned(),
            title,
            description: obj.get("description").and_then(Value::as_str).map(str::to_owned),
            kind,
            items,
            required: obj.get("required").and_then(Value::as_bool).unwrap_or(false),
            min_length: num("minLength")?,
            max_length: num("maxLength")?,
            enumeration,
            email_format: obj.get("format").and_then(Value::as_str) == Some("email"),
        })
    }

    /// Appends a cause per problem with `v` as a value of this attribute.
    pub fn check(&self, v: &Value, causes: &mut Vec<String>) {
        if v.is_null() {
            if self.required {
                causes.push(format!("{}: The field cannot be left blank", self.name));
            }
            return;
        }
        if !self.kind.accepts(v) {
            causes.push(format!("{}: Expected a value of type {}", self.name, self.kind.as_str()));
            return;
        }
        if let (Some(items), Value::Array(a)) = (self.items, v)
            && a.iter().any(|x| !items.accepts(x))
        {
            causes.push(format!("{}: Every element must be of type {}", self.name, items.as_str()));
            return;
        }
        if let Value::String(s) = v {
            let n = s.chars().count() as u64;
            if self.required && s.trim().is_empty() {
                causes.push(format!("{}: The field cannot be left blank", self.name));
                return;
            }
            if let Some(min) = self.min_length.filter(|m| n < *m) {
                causes.push(format!("{}: The field is too short (at least {min} characters)", self.name));
            }
            if let Some(max) = self.max_length.filter(|m| n > *m) {
                causes.push(format!("{}: The field is too long (at most {max} characters)", self.name));
            }
            if self.email_format && !looks_like_email(s) {
                causes.push(format!("{}: Does not match required pattern", self.name));
            }
        }
        if let Some(e) = &self.enumeration
            && !e.contains(v)
        {
            causes.push(format!("{}: Does not match one of the enumerated values", self.name));
        }
    }
}

fn valid_attribute_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && name.len() <= 100
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `local@domain` with no blanks: Okta's default check for `login` and `email`.
pub fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@') && !s.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// The base attributes every user profile has.
pub fn base_attributes() -> Vec<Attribute> {
    let mut v = vec![
        {
            let mut a = Attribute::string("login", "Username", true, Some(5), Some(100));
            a.email_format = true;
            a
        },
        Attribute::string("firstName", "First name", true, Some(1), Some(50)),
        Attribute::string("lastName", "Last name", true, Some(1), Some(50)),
        Attribute::string("middleName", "Middle name", false, None, None),
        Attribute::string("honorificPrefix", "Honorific prefix", false, None, None),
        Attribute::string("honorificSuffix", "Honorific suffix", false, None, None),
        {
            let mut a = Attribute::string("email", "Primary email", true, Some(5), Some(100));
            a.email_format = true;
            a
        },
        Attribute::string("title", "Title", false, None, None),
        Attribute::string("displayName", "Display name", false, None, None),
        Attribute::string("nickName", "Nickname", false, None, None),
        Attribute::string("profileUrl", "Profile Url", false, None, None),
        {
            let mut a = Attribute::string("secondEmail", "Secondary email", false, Some(5), Some(100));
            a.email_format = true;
            a
        },
        Attribute::string("mobilePhone", "Mobile phone", false, None, Some(100)),
        Attribute::string("primaryPhone", "Primary phone", false, None, Some(100)),
        Attribute::string("streetAddress", "Street address", false, None, None),
        Attribute::string("city", "City", false, None, None),
        Attribute::string("state", "State", false, None, None),
        Attribute::string("zipCode", "Zip code", false, None, None),
        Attribute::string("countryCode", "Country code", false, None, None),
        Attribute::string("postalAddress", "Postal Address", false, None, None),
        Attribute::string("preferredLanguage", "Preferred language", false, None, None),
        Attribute::string("locale", "Locale", false, None, None),
        Attribute::string("timezone", "Time zone", false, None, None),
        Attribute::string("userType", "User type", false, None, None),
        Attribute::string("employeeNumber", "Employee number", false, None, None),
        Attribute::string("costCenter", "Cost center", false, None, None),
        Attribute::string("organization", "Organization", false, None, None),
        Attribute::string("division", "Division", false, None, None),
        Attribute::string("department", "Department", false, None, None),
        Attribute::string("managerId", "ManagerId", false, None, None),
        Attribute::string("manager", "Manager", false, None, None),
    ];
    v.shrink_to_fit();
    v
}

/// The whole user schema: base attributes and the custom ones.
#[derive(Debug, Clone, PartialEq)]
pub struct UserSchema {
    pub base: Vec<Attribute>,
    pub custom: Vec<Attribute>,
    pub created: Timestamp,
    pub last_updated: Timestamp,
}

impl UserSchema {
    /// Rebuilds the schema from the stored custom definitions (name → definition JSON).
    pub fn from_custom_definitions(custom: &Map<String, Value>, created: Timestamp, last_updated: Timestamp) -> Self {
        let custom = custom.iter().filter_map(|(name, def)| Attribute::from_definition(name, def).ok()).collect();
        UserSchema { base: base_attributes(), custom, created, last_updated }
    }

    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.base.iter().chain(self.custom.iter()).find(|a| a.name == name)
    }

    pub fn is_base(&self, name: &str) -> bool {
        self.base.iter().any(|a| a.name == name)
    }

    /// Checks a complete profile: no unknown attributes, required ones present, types right.
    /// All problems are reported together, one `errorCauses` entry per field.
    pub fn validate_profile(&self, profile: &Map<String, Value>) -> Result<(), ApiError> {
        let mut causes = Vec::new();
        for (k, v) in profile {
            match self.attribute(k) {
                Some(attr) => attr.check(v, &mut causes),
                None => causes.push(format!("{k}: Property name '{k}' is not defined in the user profile schema")),
            }
        }
        for attr in self.base.iter().chain(self.custom.iter()) {
            if attr.required && !profile.contains_key(&attr.name) {
                causes.push(format!("{}: The field cannot be left blank", attr.name));
            }
        }
        if causes.is_empty() {
            Ok(())
        } else {
            let fields: Vec<&str> = causes.iter().filter_map(|c| c.split(':').next()).collect();
            let mut seen = Vec::new();
            for f in fields {
                if !seen.contains(&f) {
                    seen.push(f);
                }
            }
            Err(ApiError::validation_many(&seen.join(", "), causes))
        }
    }

    /// The Okta JSON Schema document for this schema.
    pub fn to_json(&self, public_url: &str) -> Value {
        let props = |attrs: &[Attribute], base: bool| -> Map<String, Value> {
            attrs.iter().map(|a| (a.name.clone(), a.to_json(base))).collect()
        };
        let required = |attrs: &[Attribute]| -> Vec<Value> {
            attrs.iter().filter(|a| a.required).map(|a| json!(a.name)).collect()
        };
        json!({
            "id": format!("{public_url}/meta/schemas/user/default"),
            "$schema": "http://json-schema.org/draft-04/schema#",
            "name": "user",
            "title": "User",
            "description": "Okta user profile template",
            "created": self.created,
            "lastUpdated": self.last_updated,
            "definitions": {
                "custom": {
                    "id": "#custom",
                    "type": "object",
                    "properties": props(&self.custom, false),
                    "required": required(&self.custom),
                },
                "base": {
                    "id": "#base",
                    "type": "object",
                    "properties": props(&self.base, true),
                    "required": required(&self.base),
                },
            },
            "type": "object",
            "properties": {
                "profile": { "allOf": [ { "$ref": "#/definitions/custom" }, { "$ref": "#/definitions/base" } ] }
            },
            "_links": { "self": { "href": format!("{public_url}/api/v1/meta/schemas/user/default"), "method": "GET", "rel": "self" } }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn validates_profiles() {
        let mut custom = Map::new();
        custom.insert("employeeLevel".into(), json!({ "title": "Level", "type": "integer" }));
        custom.insert("tags".into(), json!({ "title": "Tags", "type": "array", "items": { "type": "string" } }));
        let s = UserSchema::from_custom_definitions(&custom, Timestamp(0), Timestamp(0));
        let ok = profile(
            json!({"login":"a@b.co","email":"a@b.co","firstName":"A","lastName":"B","employeeLevel":3,"tags":["x"]}),
        );
        assert!(s.validate_profile(&ok).is_ok());

        let bad =
            profile(json!({"login":"a@b.co","email":"a@b.co","firstName":"A","lastName":"B","favouriteColour":"red"}));
        let err = s.validate_profile(&bad).err().map(|e| e.causes).unwrap_or_default();
        assert_eq!(err.len(), 1);
        assert!(err[0].starts_with("favouriteColour:"));

        let missing = profile(json!({"login":"a@b.co","firstName":"A","lastName":"B","employeeLevel":"three"}));
        let e = s.validate_profile(&missing).err();
        let causes = e.as_ref().map(|e| e.causes.clone()).unwrap_or_default();
        assert!(causes.iter().any(|c| c.starts_with("email:")));
        assert!(causes.iter().any(|c| c.starts_with("employeeLevel:")));
        assert_eq!(e.map(|e| e.code.code()), Some("E0000001"));
    }

    #[test]
    fn rejects_bad_definitions() {
        assert!(Attribute::from_definition("9lives", &json!({"title":"x","type":"string"})).is_err());
        assert!(Attribute::from_definition("ok", &json!({"title":"x","type":"object"})).is_err());
        assert!(Attribute::from_definition("ok", &json!({"type":"string"})).is_err());
        assert!(Attribute::from_definition("ok", &json!({"title":"x","type":"string"})).is_ok());
    }
}

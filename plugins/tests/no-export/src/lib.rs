//! Hostile plugin: a component of another world, without `score`.

wit_bindgen::generate!({
    inline: "
        package test:other;
        world other {
            export hello: func() -> string;
        }
    ",
    world: "other",
});

struct P;

impl Guest for P {
    fn hello() -> String {
        "hello".into()
    }
}

export!(P);

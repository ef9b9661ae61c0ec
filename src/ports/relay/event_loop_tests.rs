use super::*;

#[test]
fn tokens_round_trip() {
    let r = SlotRef { index: 4_000_000_000, gen_: GEN_MASK };
    for token in
        [Token::Waker, Token::Listener(7), Token::Client(r), Token::Server(r, 2), Token::Server(r, 15), Token::Flow(r)]
    {
        assert_eq!(Token::decode(token.encode()), Some(token), "{token:?}");
    }
}

#[test]
fn removed_slot_is_reused_with_a_new_generation() {
    let mut slab = Slab::default();
    let first = slab.insert(Entry::Flow(Flow::placeholder()));
    assert!(slab.remove(first).is_some());
    let second = slab.insert(Entry::Flow(Flow::placeholder()));
    assert_eq!(second.index, first.index);
    assert_ne!(second.gen_, first.gen_);
    assert!(slab.get_mut(first).is_none(), "a stale token must not reach the new entry");
    assert!(slab.get_mut(second).is_some());
    assert!(slab.remove(first).is_none());
}

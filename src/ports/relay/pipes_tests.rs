use super::*;

const PAGE: usize = 4096;

#[test]
fn budget_is_a_quarter_of_the_soft_limit() {
    assert_eq!(Budget::from_soft_limit(Some("16384\n")), Budget::new(Some(4096)));
}

#[test]
fn zero_or_unreadable_soft_limit_means_no_budget() {
    for text in [Some("0\n"), Some("many"), Some(""), None] {
        let budget = Budget::from_soft_limit(text);
        assert_eq!(budget, Budget::new(None), "{text:?}");
        assert!(budget.fits(usize::MAX), "{text:?}");
    }
}

#[test]
fn pipe_pages_round_up_to_a_power_of_two() {
    assert_eq!(pages_for(256 * 1024, PAGE), 64);
    assert_eq!(pages_for(100_000, PAGE), 32);
    assert_eq!(pages_for(1, PAGE), 1);
    assert_eq!(pages_for(0, PAGE), 1);
    assert_eq!(pages_for(1 << 20, 65536), 16);
}

#[test]
fn default_soft_limit_enlarges_the_pipes_of_32_connections_then_stops() {
    let mut budget = Budget::from_soft_limit(Some("16384"));
    let wanted = pages_for(256 * 1024, PAGE);
    for pipe in 0..64 {
        assert!(budget.fits(wanted), "pipe {pipe} of the first 32 connections");
        budget.charge(wanted);
    }
    assert!(!budget.fits(wanted), "a 65th enlarged pipe would pass a quarter of the soft limit");
    budget.release(wanted);
    assert!(budget.fits(wanted), "a closed pipe returns its pages");
}

#[test]
fn default_sized_pipes_count_against_the_budget() {
    let mut budget = Budget::new(Some(100));
    for _ in 0..3 {
        budget.charge(DEFAULT_PAGES);
    }
    assert!(budget.fits(52));
    assert!(!budget.fits(53));
}

#[test]
fn sizes_up_to_the_default_always_fit() {
    let mut budget = Budget::new(Some(0));
    budget.charge(1000);
    assert!(budget.fits(DEFAULT_PAGES));
    assert!(budget.fits(1));
    assert!(!budget.fits(DEFAULT_PAGES * 2));
}

#[test]
fn release_never_goes_below_zero() {
    let mut budget = Budget::new(Some(10));
    budget.release(5);
    assert_eq!(budget.used(), 0);
}

#[test]
fn open_pipes_are_charged_until_closed() {
    let mut pipes = Pipes::new(256 * 1024);
    let first = pipes.open().expect("open a pipe");
    let second = pipes.open().expect("open a pipe");
    assert_eq!(pipes.used(), (first.cap + second.cap).div_ceil(sys::page_size()));
    pipes.close(first);
    pipes.close(second);
    assert_eq!(pipes.used(), 0);
}

function split (page) => (result);
function count (words) => (result);
composition word_count (pages) => (total) {
    split(page = each pages) => (words = result);
    count(words = all words) => (total = result);
}

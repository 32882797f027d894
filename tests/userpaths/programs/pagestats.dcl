function page_length (page) => (result);
function spread (lengths) => (mean, stdev);
function top_words (pages) => (result);
function share (lengths) => (result);
function tint (mean) => (result);
composition page_stats (pages) => (mean, stdev, top, shares, tint_of_mean) {
    page_length(page = each pages) => (lengths = result);
    spread(lengths = all lengths) => (mean = mean, stdev = stdev);
    top_words(pages = all pages) => (top = result);
    share(lengths = all lengths) => (shares = result);
    tint(mean = all mean) => (tint_of_mean = result);
}

function gram (m) => (result);
composition matmul (m) => (product) {
    gram(m = all m) => (product = result);
}
composition matmul_many (ms) => (products) {
    gram(m = each ms) => (products = result);
}

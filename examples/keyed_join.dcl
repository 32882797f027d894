function summarize (customers, orders) => (result);
composition order_report (customers, orders) => (report) {
    summarize(customers = keyed customers, orders = optional keyed orders) => (report = result)
        by customers left orders;
}

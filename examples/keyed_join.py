"""A keyed join: each customer's orders, customers without orders included.

Items carry integer keys (here, customer ids).  ``dd.keyed`` groups each set by key and
``by="customers left orders"`` matches the groups up like a SQL left join: one instance
per customer, with that customer's orders (none for a customer who ordered nothing;
``dd.optional`` lets the report run even when there are no orders at all).

Run it::

    python examples/keyed_join.py
"""

import dandelion as dd


@dd.compute
def summarize(customers: list[dd.Item[str]], orders: list[dd.Item[dd.Json]]) -> dd.Item[dd.Json]:
    """One line per customer: name, number of orders, amount spent."""
    customer = customers[0]
    spent = sum(o.value["amount"] for o in orders)
    return dd.Item({"customer": customer.value, "orders": len(orders), "spent": spent},
                   key=customer.key, name=customer.value)


@dd.composition
def order_report(customers: list[dd.Item[str]],
                 orders: list[dd.Item[dd.Json]]) -> list[dd.Item[dd.Json]]:
    """Join customers with their orders by customer id, keeping customers without orders."""
    report = summarize(dd.keyed(customers), dd.optional(dd.keyed(orders)),
                       by="customers left orders")
    return report


CUSTOMERS = [dd.Item("ada", key=1), dd.Item("grace", key=2), dd.Item("edsger", key=3)]
ORDERS = [dd.Item({"amount": 30}, key=1), dd.Item({"amount": 12}, key=3),
          dd.Item({"amount": 5}, key=1)]

if __name__ == "__main__":
    for line in dd.run(order_report, CUSTOMERS, ORDERS):
        print(line.key, line.value)

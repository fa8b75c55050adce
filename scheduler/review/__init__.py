"""Operations review: schedule, batch review, savings, budget, forecast accuracy, reports, metrics."""
